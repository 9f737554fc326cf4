"""`iwsft compare RUN_A RUN_B ...`: accuracies with intervals, paired tests, agreement per benchmark."""

from __future__ import annotations

HELP = "Compare evaluation runs: accuracy [95% CI], paired difference + exact McNemar, thinking tokens, agreement"


def add_arguments(p):
    p.add_argument("runs", nargs="+", help="evaluation folders: `iwsft eval --out` model folders or run directories "
                                           "(NAME=PATH to label one)")
    p.add_argument("--out", default=None, help="also write compare.json / compare.md / compare.txt here")


def run(args) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from harness.core.errors import UserError
    from harness.core.io import atomic_write_json, atomic_write_text, ensure_writable_dir
    from harness.core.stats import paired_compare, wilson
    from harness.evaluation.benchmarks import clusters_for
    from harness.evaluation.store import differing_settings, find_runs

    if len(args.runs) < 2:
        raise UserError("give at least two runs to compare")
    from harness.commands import labelled_paths

    labelled = []
    for label, path in labelled_paths(args.runs, "compare").items():
        p = Path(path)
        if not p.exists():
            raise UserError(f"{p} does not exist; give evaluation output folders (see `iwsft eval --out`)")
        labelled.append((label, find_runs(p)))
    console = Console(record=True, width=150)
    report = {"runs": [n for n, _ in labelled], "benchmarks": {}}
    benches = [b for b in dict.fromkeys(b for _, r in labelled for b in r)]
    for bench in benches:
        have = [(n, r[bench]) for n, r in labelled if bench in r]
        t = Table(title=f"{bench}", title_justify="left")
        for col in ("run", "n", "accuracy % [95% CI]", "mean thinking tokens"):
            t.add_column(col, justify="left" if col == "run" else "right")
        entry = {"runs": [], "paired": [], "agreement": {}}
        for n, r in have:
            k = len(r.scores)
            c = sum(r.scores.values())
            lo, hi = wilson(c, k)
            th = sum(r.thinking.values()) / k if k else 0
            t.add_row(n, str(k), f"{100 * c / max(k, 1):.1f} [{100 * lo:.1f}, {100 * hi:.1f}]", f"{th:.0f}")
            entry["runs"].append({"run": n, "n": k, "accuracy": c / max(k, 1), "ci95": [lo, hi], "thinking_tokens_mean": th,
                                  "path": str(r.path)})
        console.print(t)
        # Different models are the point; other differing settings (budgets, Waits, samples) are
        # legitimate comparisons too, but the reader should know.
        differ = differing_settings([r.path for _, r in have], ignore=("model", "settings_sha256", "model_arg"))
        entry["settings_differ"] = differ
        if differ:
            console.print(f"[yellow]note[/]: these {bench} runs also differ in {', '.join(differ)} (see each run's settings.json)")
        if len(have) >= 2:
            pt = Table(title=f"{bench}: paired (B - A) on common problems", title_justify="left")
            for col in ("A", "B", "n", "diff % [95% CI]", "A only", "B only", "both", "neither", "p (exact)"):
                pt.add_column(col, justify="left" if col in ("A", "B") else "right")
            for i in range(len(have)):
                for j in range(i + 1, len(have)):
                    (na, ra), (nb, rb) = have[i], have[j]
                    p = paired_compare(ra.scores, rb.scores, clusters=clusters_for(bench, set(ra.scores) & set(rb.scores)))
                    lo, hi = p.diff_ci95
                    pt.add_row(na, nb, str(p.n), f"{100 * p.diff:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]", str(p.only_a),
                               str(p.only_b), str(p.both), str(p.neither), f"{p.p_mcnemar:.3g}")
                    entry["paired"].append({"a": na, "b": nb, **p.to_dict()})
            console.print(pt)
            for m in sorted({q["method"] for q in entry["paired"]}):
                console.print(f"method: {m}")
            # Agreement matrix: how many common problems each pair got right together.
            at = Table(title=f"{bench}: problems both got right (diagonal: each run's own)", title_justify="left")
            at.add_column("")
            for n, _ in have:
                at.add_column(n, justify="right")
            for na, ra in have:
                cells = []
                for nb, rb in have:
                    common = set(ra.scores) & set(rb.scores)
                    both = sum(1 for q in common if ra.scores[q] >= 0.5 and rb.scores[q] >= 0.5)
                    entry["agreement"].setdefault(na, {})[nb] = both
                    cells.append(f"{both}/{len(common)}")
                at.add_row(na, *cells)
            console.print(at)
        report["benchmarks"][bench] = entry
    if args.out:
        out = ensure_writable_dir(Path(args.out))
        atomic_write_json(out / "compare.json", report)
        atomic_write_text(out / "compare.md", markdown(report))
        atomic_write_text(out / "compare.txt", console.export_text())
    return 0


def markdown(report: dict) -> str:
    """compare.md: the same tables as the terminal output, from the JSON report."""
    def pct(x):
        return f"{100 * x:.1f}"

    out = ["# Comparison of evaluation runs", "", "Runs: " + ", ".join(report["runs"])]
    for bench, e in report["benchmarks"].items():
        out += ["", f"## {bench}", "", "| run | n | accuracy % [95% CI] | mean thinking tokens |", "|---|---|---|---|"]
        for r in e["runs"]:
            lo, hi = r["ci95"]
            out.append(f"| {r['run']} | {r['n']} | {pct(r['accuracy'])} [{pct(lo)}, {pct(hi)}] | {r['thinking_tokens_mean']:.0f} |")
        if e["paired"]:
            out += ["", f"### {bench}: paired (B - A) on common problems", "",
                    "| A | B | n | diff % [95% CI] | A only | B only | both | neither | p (exact) |",
                    "|---|---|---|---|---|---|---|---|---|"]
            for p in e["paired"]:
                lo, hi = p["diff_ci95"]
                out.append(f"| {p['a']} | {p['b']} | {p['n']} | {100 * p['diff']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | "
                           f"{p['only_a']} | {p['only_b']} | {p['both']} | {p['neither']} | {p['p_mcnemar']:.3g} |")
            out += [""] + [f"Method: {m}" for m in sorted({p["method"] for p in e["paired"]})]
        if e["agreement"]:
            names = list(e["agreement"])
            out += ["", f"### {bench}: problems both got right (diagonal: each run's own)", "",
                    "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for a in names:
                out.append(f"| {a} | " + " | ".join(str(e["agreement"][a].get(b, "-")) for b in names) + " |")
    return "\n".join(out) + "\n"
