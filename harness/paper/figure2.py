"""Figure 2 (`iwsft budget-sweep`): accuracy against average thinking tokens over (thinking budget,
Wait) cells, each point with its cluster-aware 95% interval and its forced Waits actually used, a
paired test between the checkpoints at each cell, and the budget mode and deviations in figure2.json.

The suite's `budget_sweep:` block: benchmarks, limit, cells (thinking_budget, wait), budget_mode
("independent": the cap is exact; "s1-compat": s1's loop, whose thinking can exceed the cap;
default: the suite's own budget_mode) and y_floor (the accuracy axis starts there, in %; default 0).
"""

from __future__ import annotations

from itertools import combinations

from harness.core.errors import UserError

BLOCK_KEYS = {"benchmarks", "limit", "cells", "budget_mode", "y_floor"}
MODES = ("independent", "s1-compat")


def check_block(suite) -> dict:
    """The suite's budget_sweep block, checked: a UserError naming the key and the fix."""
    bs = suite.budget_sweep
    where = f"{suite.path}: budget_sweep"
    if not isinstance(bs, dict):
        raise UserError(f"{where} must be a mapping with benchmarks and cells (see evals/tiny.yaml)")
    unknown = sorted(set(bs) - BLOCK_KEYS)
    if unknown:
        raise UserError(f"{where} has an unknown key {unknown[0]!r}; its keys are {', '.join(sorted(BLOCK_KEYS))}")
    if not bs.get("benchmarks") or not bs.get("cells"):
        raise UserError(f"{where} needs benchmarks: [..] and cells: [{{thinking_budget: N, wait: W}}, ..]")
    for c in bs["cells"]:
        if not (isinstance(c, dict) and set(c) == {"thinking_budget", "wait"}):
            raise UserError(f"{where}: each cell is {{thinking_budget: N, wait: W}}, got {c!r}")
    mode = bs.get("budget_mode", suite.settings.budget_mode)
    if mode not in MODES:
        raise UserError(f"{where}: budget_mode must be independent or s1-compat, not {mode!r}")
    floor = bs.get("y_floor", 0)
    if not (isinstance(floor, (int, float)) and 0 <= floor < 100):
        raise UserError(f"{where}: y_floor is the accuracy axis' lower end in %, 0-99, not {floor!r}")
    return {**bs, "budget_mode": mode, "y_floor": floor}


def waits_used(run) -> dict:
    """What budget forcing did on a run's scored samples: Waits actually injected and caps hit."""
    from harness.evaluation.store import read_samples

    rows = [r for (pid, s), r in read_samples(run.path).items() if pid in run.scores and s < run.samples_per_problem]
    n = len(rows) or 1
    used = [int(r.get("num_waits") or 0) for r in rows]
    return {"mean": sum(used) / n, "max": max(used, default=0), "share_any": sum(u > 0 for u in used) / n,
            "share_capped": sum(bool(r.get("hit_cap")) for r in rows) / n}


def point(cell: dict, run) -> dict:
    """One Figure 2 point: the cell, accuracy with the same interval as the reports, thinking tokens
    and the Waits used; `forcing` says whether any Wait extended it ("wait-extended") or only the
    cap shaped it ("cap-only")."""
    from harness.evaluation.benchmarks import clusters_for
    from harness.evaluation.metrics import accuracy_interval

    n = len(run.scores)
    keys = clusters_for(run.benchmark, list(run.outcomes))
    ci, method = accuracy_interval(list(run.outcomes.values()), keys)
    w = waits_used(run)
    return {**cell, "accuracy": sum(run.scores.values()) / n, "n": n,
            "clusters": len(set(keys.values())) if keys else n, "ci95": list(ci), "ci_method": method,
            "thinking_tokens_mean": sum(run.thinking.values()) / n, "waits_used": w,
            "forcing": "wait-extended" if w["share_any"] > 0 else "cap-only", "run_dir": str(run.path)}   # iwsft view reads its samples


def cell_tests(runs: dict[tuple[str, str, int], object], cells: list[dict]) -> list[dict]:
    """A paired test (harness.evaluation.metrics.paired_runs: exact, over clusters) between every two
    checkpoints at each (benchmark, cell), with Holm-adjusted p over the sweep's tests."""
    from harness.core.stats import holm
    from harness.evaluation.metrics import paired_runs

    models = list(dict.fromkeys(m for m, _, _ in runs))
    benches = list(dict.fromkeys(b for _, b, _ in runs))
    out = []
    for bench in benches:
        for i, c in enumerate(cells):
            for a, b in combinations(models, 2):
                ra, rb = runs.get((a, bench, i)), runs.get((b, bench, i))
                if ra is None or rb is None or not set(ra.outcomes) & set(rb.outcomes):
                    continue
                out.append({"a": a, "b": b, "benchmark": bench, **c, **paired_runs(ra, rb)})
    for t, p in zip(out, holm([t["p_mcnemar"] for t in out])):
        t["p_holm"] = p
    return out


def deviations(suite, block: dict) -> list[str]:
    temp = suite.settings.temperature
    out = [("Budget mode independent: the thinking cap is exact in token ids and a Wait is forced only while budget "
            "remains; s1's loop (budget_mode: s1-compat) re-submits each round with the whole cap, so its thinking can "
            "exceed the cap." if block["budget_mode"] == "independent" else
            "Budget mode s1-compat: s1's loop; thinking can exceed the cap (up to (Wait + 1) x cap) and the answer is "
            "conditioned on the thinking cut to the cap."),
           "Cells: the suite's (thinking budget, Wait) grid; the paper does not publish its own, and its Figure 2 comes "
           "from an earlier run with other settings.",
           f"Decoding: temperature {temp:g}" + (" (greedy, as s1)." if temp == 0 else "."),
           "A point with no Wait used (cap-only: every sample hit the cap or had no Wait to spend) is not a Wait-extended "
           "one; figure2.json gives each point's Waits used and share of capped samples."]
    if block.get("limit") is not None:
        out.append(f"Subset: the first {block['limit']} problems of each benchmark.")
    return out


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = sorted({b for per in result["models"].values() for b in per})
    floor = result.get("y_floor", 0)
    fig, axes = plt.subplots(1, max(1, len(benches)), figsize=(6 * max(1, len(benches)), 4.5), squeeze=False)
    for ax, bench in zip(axes[0], benches):
        top = floor
        for k, (name, per) in enumerate(result["models"].items()):
            pts = per.get(bench, [])
            if not pts:
                continue
            x = [p["thinking_tokens_mean"] for p in pts]
            y = [100 * p["accuracy"] for p in pts]
            err = [[100 * (p["accuracy"] - p["ci95"][0]) for p in pts], [100 * (p["ci95"][1] - p["accuracy"]) for p in pts]]
            line = ax.errorbar(x, y, yerr=err, capsize=3, label=name, linestyle="-" if k % 2 == 0 else "--")[0]
            for p, xi, yi in zip(pts, x, y):
                extended = p["forcing"] == "wait-extended"
                ax.plot([xi], [yi], marker="o", color=line.get_color(),
                        markerfacecolor=line.get_color() if extended else "white", markersize=7)
                ax.annotate(f"{p['thinking_budget']}/W{p['wait']}", (xi, yi), textcoords="offset points",
                            xytext=(6, 7 if k % 2 == 0 else -13), fontsize=7, color=line.get_color(), zorder=5,
                            bbox=dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none", alpha=0.8))
            top = max(top, max(100 * p["ci95"][1] for p in pts))
        ax.set_ylim(floor, min(100, top + 5))
        ax.margins(x=0.12)                     # room for the last point's label inside the axes
        ax.set_title(bench)
        ax.set_xlabel("average thinking tokens")
        ax.set_ylabel(f"accuracy % (axis from {floor:g}%; 95% CI)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), frameon=False)
    fig.suptitle(f"Budget forcing (preset {result['preset']}, budget mode {result['budget_mode']})")
    fig.text(0.5, 0.07, "label: thinking budget / forced Waits; filled: Waits used, hollow: cap only",
             ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
