"""Table 1 and comparison reports: our rows with 95% intervals beside the paper's, paired tests,
and the deviations that apply. Rendered to the terminal (rich), Markdown and JSON."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.core.io import atomic_write_json, atomic_write_text, ensure_writable_dir
from harness.core.stats import ALPHA, holm, plural, points_interval, seed_t_test
from harness.paper.power import mdd_lines
from harness.evaluation.benchmarks import clusters_for, report_order
from harness.evaluation.benchmarks import title as bench_title
from harness.evaluation.store import Run
from harness.core.errors import UserError
from harness.evaluation.metrics import accuracy_interval, n_text, paired_runs

ROOT = Path(__file__).resolve().parents[2]


def paper_rows() -> list[dict]:
    return json.loads((ROOT / "reports" / "paper_table1.json").read_text())["rows"]


def cell(run: Run) -> dict:
    """One run's cell, with the same accuracy, interval and n as `iwsft eval` and compare."""
    if run.missing:
        raise UserError(f"{run.path} is incomplete: {len(run.missing)} problem(s) asked for are not stored yet (shards "
                        "still to run, or an interrupted eval); finish it (re-run its eval or the missing shards) first")
    n = len(run.scores)
    acc = sum(run.scores.values()) / n if n else None      # nothing scored (e.g. every prompt had no room)
    ci, method = accuracy_interval(list(run.outcomes.values()), clusters_for(run.benchmark, run.outcomes))
    return {"accuracy": acc, "ci95": list(ci) if ci else None, "ci_method": method, "n": n, "samples_per_problem": run.samples_per_problem,
            "thinking_tokens_mean": run.metrics.get("thinking_tokens_mean"),
            "unextracted": run.metrics.get("unextracted"), "multiple_letters": run.metrics.get("multiple_letters"),
            "truncated": run.metrics.get("truncated"),
            "no_room": len(run.no_room), "weights_id": run.weights_id, "run_dir": str(run.path)}


def build_table(models: dict[str, list[dict[str, Run]]], paired: list[list[str]], deviations: list[str],
                title: str, extra: dict | None = None) -> dict:
    """models: row name -> one {benchmark: Run} per seed. Returns the JSON report."""
    rows = []
    benches = report_order({b for seeds in models.values() for s in seeds for b in s})
    for name, seeds in models.items():
        row = {"model": name, "benchmarks": {}}
        for b in benches:
            cells = [cell(s[b]) for s in seeds if b in s]
            if not cells:
                continue
            c = dict(cells[0])
            if len(cells) > 1 and all(x["accuracy"] is not None for x in cells):
                accs = [x["accuracy"] for x in cells]
                c = {"accuracy": statistics.fmean(accs), "ci95": None, "n": cells[0]["n"],
                     "samples_per_problem": cells[0]["samples_per_problem"], "seeds": len(cells),
                     "seed_std": statistics.stdev(accs), "seed_min": min(accs), "seed_max": max(accs),
                     "per_seed": cells, "thinking_tokens_mean": statistics.fmean(x["thinking_tokens_mean"] or 0 for x in cells)}
            row["benchmarks"][b] = c
        rows.append(row)
    comparisons = []
    for a, b in paired:
        if a not in models or b not in models:
            continue
        for bench in benches:
            la, lb = models[a], models[b]
            n = max(len(la), len(lb))     # one untrained base row pairs with every seed of a trained row
            la, lb = (la * n if len(la) == 1 else la), (lb * n if len(lb) == 1 else lb)
            for seed, (ra, rb) in enumerate(zip(la, lb)):
                if bench in ra and bench in rb and set(ra[bench].outcomes) & set(rb[bench].outcomes):
                    p = paired_runs(ra[bench], rb[bench], seed=seed)
                    comparisons.append({"a": a, "b": b, "benchmark": bench, "seed_index": seed, **p})
    for c in comparisons:
        c["question"] = "these two checkpoints, on these problems"
    over_seeds = methods_over_seeds(models, paired, benches, comparisons)
    _holm_family(comparisons, "p_mcnemar")
    _holm_family(over_seeds, "p")
    return {"title": title, "rows": rows, "paired": comparisons, "methods_over_seeds": over_seeds,
            "answer": answer_lines(comparisons, over_seeds),
            "paper": paper_rows_for(models), "deviations": deviations + notes(rows),
            "methods": methods(rows, comparisons, over_seeds, max(len(v) for v in models.values()) if models else 0) + mdd_lines(models),
            **(extra or {})}


# ---- which question a test answers, and Holm's family ------------------------------------------------

SEED_TEST = ("t test over training seeds ({df} df) of the per-seed paired accuracy differences B - A (seed i of A "
             "with seed i of B; a one-run row is paired with every seed): the seeds are the unit, so it asks whether "
             "the methods differ over training runs, on these problems (the problems' own sampling error is in the "
             "per-checkpoint tests)")


def methods_over_seeds(models: dict, paired: list[list[str]], benches: list[str], comparisons: list[dict]) -> list[dict]:
    """One between-method test per (A, B, benchmark) whose rows have N >= 2 training seeds: the
    per-seed paired differences (from the checkpoint comparisons) tested over seeds, seed the unit."""
    out = []
    for a, b in paired:
        if a not in models or b not in models or max(len(models[a]), len(models[b])) < 2:
            continue
        for bench in benches:
            per_seed = [c for c in comparisons if (c["a"], c["b"], c["benchmark"]) == (a, b, bench)]
            if len(per_seed) < 2:
                continue
            diffs = [c["diff"] for c in per_seed]
            p, ci = seed_t_test(diffs)
            single = [x for x in (a, b) if len(models[x]) == 1]
            question = (f"method {b if single == [a] else a} over {len(diffs)} training seeds against the one {single[0]} "
                        "checkpoint" if single else f"these two methods, over {len(diffs)} training seeds each")
            out.append({"a": a, "b": b, "benchmark": bench, "seeds": len(diffs), "seed_diffs": diffs,
                        "diff": sum(diffs) / len(diffs), "diff_ci95": list(ci) if ci else None, "p": p, "question": question,
                        "method": SEED_TEST.format(df=len(diffs) - 1)})
    return out


ANSWER_TITLE = "Answer: do the trained methods differ?"


def answer_lines(comparisons: list[dict], over_seeds: list[dict]) -> list[str]:
    """One line per pair of trained rows, read off the tests printed below it (the same p decides: Holm's where
    the test is in a family): which benchmarks favour which row, and what the tests could and could not show.
    With seeds the methods-over-seeds tests answer; with one seed the checkpoint tests, which say so."""
    out = []
    pairs = list(dict.fromkeys((t["a"], t["b"]) for t in comparisons if "base" not in (t["a"], t["b"])))
    for a, b in pairs:
        over = [t for t in over_seeds if (t["a"], t["b"]) == (a, b)]
        tests, key = (over, "p") if over else ([t for t in comparisons if (t["a"], t["b"]) == (a, b)], "p_mcnemar")
        if over:
            unit = f"over {over[0]['seeds']} training seeds each (the methods' question)"
        else:
            unit = ("one checkpoint each: this compares these two checkpoints, not the methods "
                    "(--seeds N for that)")
        sig = [t for t in tests if _verdict(t, key) == ""]
        up = [t["benchmark"] for t in sig if t["diff"] > 0]
        down = [t["benchmark"] for t in sig if t["diff"] < 0]
        never = [t["benchmark"] for t in tests if "in_holm_family" in t and not t["in_holm_family"]]
        tested = [t["benchmark"] for t in tests if t["benchmark"] not in never]
        parts = []
        if up:
            parts.append(f"{b} higher on {', '.join(up)}")
        if down:
            parts.append(f"{a} higher on {', '.join(down)}")
        if not (up or down):
            parts.append(f"no significant difference on {', '.join(tested)}" if tested else "no test could reject")
        if never:
            parts.append(f"{', '.join(never)}: too few differing problems for any test to reject")
        out.append(f"{b} vs {a}, {unit}: " + "; ".join(parts) + " (family-wise 5%, Holm).")
    return out


def _holm_family(tests: list[dict], key: str) -> None:
    """Holm over the tests that can reject: an exact test whose smallest attainable p is >= 0.05 (5 or
    fewer discordant units) never rejects, so it is left out rather than diluting the rest (Tarone,
    1990); `in_holm_family` says which were in, `p_holm` is None for the others."""
    family = [t for t in tests if t.get(key) is not None and t.get("p_min", 0.0) < ALPHA]
    for t in tests:
        t["in_holm_family"], t["p_holm"] = False, None
    for t, adjusted in zip(family, holm([t[key] for t in family])):
        t["in_holm_family"], t["p_holm"] = True, adjusted


def _verdict(t: dict, key: str) -> str:
    """' (n.s.)' unless the p the reader is told to read, Holm's when the test is in a family, is < 0.05."""
    p = t.get("p_holm") if t.get("in_holm_family") else (None if "in_holm_family" in t else t.get(key))
    return "" if p is not None and p < ALPHA else " (n.s.)"


def notes(rows: list[dict]) -> list[str]:
    """Which weights each row scored, and the problems left unscored for want of room."""
    out = []
    ids = {r["model"]: sorted({c.get("weights_id") for c in _cells(r)} - {None}) for r in rows}
    if any(ids.values()):
        out.append("Weights scored: " + "; ".join(f"{m} {', '.join(v)}" for m, v in ids.items() if v) + ".")
    for r in rows:
        for b, c in r["benchmarks"].items():
            n_room = max((x.get("no_room") or 0) for x in _cells(r, b))
            if n_room:
                out.append(f"{r['model']}, {b}: {n_room} problem(s) not scored (left out of n): the prompt left no room "
                           "under the total budget.")
    return out


def _cells(row: dict, bench: str | None = None) -> list[dict]:
    cs = row["benchmarks"].values() if bench is None else [row["benchmarks"][bench]]
    return [x for c in cs for x in (c.get("per_seed") or [c])]


def methods(rows: list[dict], comparisons: list[dict], over_seeds: list[dict] | None = None, seeds: int = 1) -> list[str]:
    """One line per benchmark: how its accuracy intervals and its paired tests were computed."""
    out = []
    for bench in report_order({b for r in rows for b in r["benchmarks"]} | {c["benchmark"] for c in comparisons}):
        acc = sorted({x.get("ci_method") for r in rows if bench in r["benchmarks"]
                      for x in r["benchmarks"][bench].get("per_seed", [r["benchmarks"][bench]]) if x.get("ci_method")})
        paired = sorted({c["method"] for c in comparisons if c["benchmark"] == bench})
        if acc == ["no problems"] and not paired:
            out.append(f"{bench_title(bench)}: no problem scored, so no interval.")
        elif acc or paired:
            acc = [a for a in acc if a != "no problems"]
            out.append(f"{bench_title(bench)}: accuracy 95% CI by {'; '.join(acc) or '-'}" +
                       (f". Paired: {'; '.join(paired)}" if paired else ""))
    for m in sorted({t["method"] for t in over_seeds or []}):
        out.append(f"Methods over training seeds: {m}.")
    if rows:
        out.append(THINK_NOTE[0].upper() + THINK_NOTE[1:] + ".")
    out += holm_lines(comparisons, over_seeds or [])
    if comparisons and seeds < 2:
        out.append("Checkpoints, not methods: with one training seed per row every test above compares two particular "
                   "checkpoints; whether the methods differ (another seed could land anywhere in the seed spread) "
                   "needs --seeds N (N >= 2), which adds a test over seeds.")
    return out


def holm_lines(comparisons: list[dict], over_seeds: list[dict]) -> list[str]:
    """Which tests each Holm family holds, in words."""
    out = []
    for tests, what in ((comparisons, "checkpoint tests"), (over_seeds, "method tests over seeds")):
        if len(tests) < 2:
            continue
        fam = sum(1 for t in tests if t.get("in_holm_family"))
        left = len(tests) - fam
        line = f"Holm p ({what}): adjusted over the {plural(fam, 'test')} that can reach p < 0.05 (family-wise 5%)"
        if left:
            line += (f"; {plural(left, 'test')} with 5 or fewer discordant units cannot reject whatever the data, "
                     "so left out (Holm p shown as -; Tarone 1990)")
        if what.startswith("method") and comparisons:
            line += "; a family apart from the checkpoint tests (another question)"
        out.append(line + ".")
    return out


def paper_rows_for(models) -> list[dict]:
    """The paper's rows; a row keeps its `ours` mark (the name of our matching row) only when that
    row is in this report, so a table of other checkpoints claims no correspondence it does not have."""
    return [{k: v for k, v in r.items() if k != "ours" or v in models} for r in paper_rows()]


PAPER_TITLE = "Paper, Table 1 (Qwen2.5-32B-Instruct base; s1 protocol; LLM-judged)"


def _ours(paper_row: dict) -> str:
    return f"  ← ours: {paper_row['ours']}" if paper_row.get("ours") else ""


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def _cell_text(c: dict | None) -> str:
    if c is None:
        return "-"
    n = n_text(c["n"], c.get("samples_per_problem", 1))
    if c.get("seeds"):
        return f"{_pct(c['accuracy'])} ± {_pct(c['seed_std'])} (n={n}, {c['seeds']} seeds)"
    lo, hi = c["ci95"] or (None, None)
    return f"{_pct(c['accuracy'])} [{_pct(lo)}, {_pct(hi)}] n={n}"


def render(report: dict, console: Console) -> None:
    benches = report_order({b for r in report["rows"] for b in r["benchmarks"]})
    t = Table(title=report["title"], title_justify="left", show_lines=False)
    t.add_column("model")
    for b in benches:
        t.add_column(bench_title(b) + " % [95% CI]", justify="right")
    t.add_column("think tok", justify="right")
    for r in report["rows"]:
        t.add_row(f"[bold]{r['model']}[/]", *(_cell_text(r["benchmarks"].get(b)) for b in benches), _think_text(r))
    console.print(t)
    if report.get("answer"):
        console.print(f"[bold]{ANSWER_TITLE}[/]")
        for line in report["answer"]:
            console.print(f"  • {escape(line)}")

    paper = Table(title=PAPER_TITLE, title_justify="left")
    paper.add_column("model")
    for b in ("aime24", "math500", "gpqa_diamond"):
        paper.add_column(bench_title(b) + " %", justify="right")
    for r in report["paper"]:
        style = "bold" if r.get("ours") else ""
        paper.add_row(r["model"] + _ours(r),
                      *("-" if r.get(b) is None else f"{r[b]:.1f}" for b in ("aime24", "math500", "gpqa_diamond")), style=style)
    console.print(paper)

    for title, question, cols, rows in _test_tables(report):
        pt = Table(title=f"{title}. {question}", title_justify="left")
        for col in cols:
            pt.add_column(col, justify="left" if col in ("A", "B", "benchmark") else "right")
        for row in rows:
            pt.add_row(*row)
        console.print(pt)
    if report.get("methods"):
        console.print("[bold]Statistical methods[/]")
        for line in report["methods"]:
            console.print(f"  • {escape(line)}")
    console.print("[bold]Deviations from the paper's protocol[/]")
    for d in report["deviations"]:
        console.print(f"  • {escape(d)}")


THINK_NOTE = ("think tok: mean thinking tokens per sample over every scored sample of the row, all benchmarks "
              "pooled (each benchmark weighted by its samples); per benchmark in each run's metrics.json")


def _think_text(row: dict) -> str:
    """The row's mean thinking tokens per sample, benchmarks pooled by their samples (an unweighted mean of
    benchmark means would let 2 AIME problems weigh as much as 312 arith ones)."""
    pairs = [(c["thinking_tokens_mean"], (c.get("n") or 0) * (c.get("samples_per_problem") or 1))
             for c in row["benchmarks"].values() if c.get("thinking_tokens_mean") is not None]
    total = sum(w for _, w in pairs)
    return f"{sum(m * w for m, w in pairs) / total:.0f}" if total else "-"


def _ci_text(d: dict) -> str:
    lo, hi = d["diff_ci95"] if d.get("diff_ci95") else (None, None)
    return f"{100 * d['diff']:+.1f}" + ("" if lo is None else " " + points_interval(lo, hi))


def _p_cells(t: dict, key: str, holm_col: bool) -> list[str]:
    """The p (and Holm p) cells; '(n.s.)' sits beside the p that decides it, Holm's when shown."""
    p = "-" if t.get(key) is None else f"{t[key]:.3g}"
    if not holm_col:
        return [p + _verdict(t, key)]
    return [p, ("-" if t.get("p_holm") is None else f"{t['p_holm']:.3g}") + _verdict(t, key)]


def _test_tables(report: dict) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(title, question, columns, rows) of the paired tests, one table per question they answer; shared by the
    terminal and Markdown renderings so the two cannot drift apart."""
    out = []
    if report["paired"]:
        holm_col = _holm_shown(report["paired"])
        cols = ["A", "B", "benchmark", "n", "A %", "B %", "diff [95% CI]", "A only / B only", "p (exact)"]
        rows = [[p["a"], p["b"], _paired_bench(p, report), _paired_n(p), _pct(p["acc_a"]), _pct(p["acc_b"]), _ci_text(p),
                 f"{p['only_a']} / {p['only_b']}", *_p_cells(p, "p_mcnemar", holm_col)] for p in report["paired"]]
        out.append(("Paired comparisons of checkpoints (diff = B - A)",
                    "Question answered: do these two checkpoints differ on these problems? (one test per training seed)",
                    cols + (["Holm p"] if holm_col else []), rows))
    over = report.get("methods_over_seeds") or []
    if over:
        holm_col = _holm_shown(over)
        cols = ["A", "B", "benchmark", "seeds", "per-seed diffs", "mean diff [95% CI]", "p (t)"]
        rows = [[m["a"], m["b"], m["benchmark"], str(m["seeds"]), " ".join(f"{100 * d:+.1f}" for d in m["seed_diffs"]),
                 _ci_text(m), *_p_cells(m, "p", holm_col)] for m in over]
        out.append(("Methods over training seeds (diff = B - A)",
                    "Question answered: do these two methods differ, training seeds the unit? (the seeds' paired "
                    "differences, t test)", cols + (["Holm p"] if holm_col else []), rows))
    return out


def _holm_shown(tests: list[dict]) -> bool:
    return len(tests) > 1 and all("p_holm" in p for p in tests)


def _paired_bench(p: dict, report: dict) -> str:
    """The benchmark of a paired row, with its training seed when the report has several."""
    multi = any(q.get("seed_index") for q in report["paired"])
    return p["benchmark"] + (f" (seed {p['seed_index'] + 1})" if multi else "")


def _paired_n(p: dict) -> str:
    return n_text(p.get("n_problems", p["n"]), p.get("samples_per_problem", 1))


def markdown(report: dict) -> str:
    benches = report_order({b for r in report["rows"] for b in r["benchmarks"]})
    out = [f"# {report['title']}", "", "| model | " + " | ".join(bench_title(b) + " % [95% CI]" for b in benches) + " | think tok |",
           "|---|" + "---|" * len(benches) + "---|"]
    for r in report["rows"]:
        out.append(f"| {r['model']} | " + " | ".join(_cell_text(r["benchmarks"].get(b)) for b in benches) + f" | {_think_text(r)} |")
    if report.get("answer"):
        out += ["", f"## {ANSWER_TITLE}", ""] + [f"- {line}" for line in report["answer"]]
    out += ["", f"## {PAPER_TITLE}", "", "| model | AIME24 | MATH500 | GPQA Diamond |", "|---|---|---|---|"]
    for r in report["paper"]:
        out.append(f"| {r['model']}{_ours(r)} | " + " | ".join("-" if r.get(b) is None else f"{r[b]:.1f}" for b in ("aime24", "math500", "gpqa_diamond")) + " |")
    for title, question, cols, rows in _test_tables(report):
        out += ["", f"## {title}", "", question, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
    if report.get("methods"):
        out += ["", "## Statistical methods", ""] + [f"- {m}" for m in report["methods"]]
    out += ["", "## Deviations", ""] + [f"- {d}" for d in report["deviations"]]
    return "\n".join(out) + "\n"


def write_report(report: dict, out_dir: Path, stem: str = "table1") -> Console:
    """Print to the terminal and write OUT/stem.{json,md,txt}; returns the recording console."""
    out_dir = ensure_writable_dir(Path(out_dir))
    console = Console(record=True, width=160)
    render(report, console)
    atomic_write_json(out_dir / f"{stem}.json", report)
    atomic_write_text(out_dir / f"{stem}.md", markdown(report))
    atomic_write_text(out_dir / f"{stem}.txt", console.export_text())
    console.print(f"wrote {out_dir / (stem + '.json')}, .md and .txt")
    return console
