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
from harness.core.stats import holm
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
            "unextracted": run.metrics.get("unextracted"), "truncated": run.metrics.get("truncated"),
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
    # Many paired tests in one report: Holm's adjustment keeps the family-wise error at 5%.
    for c, adjusted in zip(comparisons, holm([c["p_mcnemar"] for c in comparisons])):
        c["p_holm"] = adjusted
    return {"title": title, "rows": rows, "paired": comparisons, "paper": paper_rows_for(models),
            "deviations": deviations + notes(rows), "methods": methods(rows, comparisons) + mdd_lines(models), **(extra or {})}


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


def methods(rows: list[dict], comparisons: list[dict]) -> list[str]:
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
    if len(comparisons) > 1:
        out.append(f"Holm p: the paired p-values adjusted for the {len(comparisons)} tests of this report (family-wise 5%).")
    return out


def paper_rows_for(models) -> list[dict]:
    """The paper's rows; a row keeps its `ours` mark (the name of our matching row) only when that
    row is in this report, so a table of other checkpoints claims no correspondence it does not have."""
    return [{k: v for k, v in r.items() if k != "ours" or v in models} for r in paper_rows()]


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
        th = [c.get("thinking_tokens_mean") for c in r["benchmarks"].values() if c.get("thinking_tokens_mean") is not None]
        t.add_row(f"[bold]{r['model']}[/]", *(_cell_text(r["benchmarks"].get(b)) for b in benches),
                  f"{statistics.fmean(th):.0f}" if th else "-")
    console.print(t)

    paper = Table(title="Paper, Table 1 (Qwen2.5-32B-Instruct base; s1 protocol; LLM-judged)", title_justify="left")
    paper.add_column("model")
    for b in ("aime24", "math500", "gpqa_diamond"):
        paper.add_column(bench_title(b) + " %", justify="right")
    for r in report["paper"]:
        style = "bold" if r.get("ours") else ""
        paper.add_row(r["model"] + (f"  ← ours: {r['ours']}" if r.get("ours") else ""),
                      *("-" if r.get(b) is None else f"{r[b]:.1f}" for b in ("aime24", "math500", "gpqa_diamond")), style=style)
    console.print(paper)

    if report["paired"]:
        pt = Table(title="Paired comparisons on the problems both answered (diff = B - A)", title_justify="left")
        cols = ["A", "B", "benchmark", "n", "A %", "B %", "diff [95% CI]", "A only / B only", "p (exact)"]
        for col in cols + (["Holm p"] if _holm_shown(report) else []):
            pt.add_column(col, justify="right" if col not in ("A", "B", "benchmark") else "left")
        for p in report["paired"]:
            lo, hi = p["diff_ci95"]
            verdict = "" if p["p_mcnemar"] < 0.05 else " (n.s.)"
            pt.add_row(p["a"], p["b"], _paired_bench(p, report), _paired_n(p),
                       _pct(p["acc_a"]), _pct(p["acc_b"]), f"{100 * p['diff']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]",
                       f"{p['only_a']} / {p['only_b']}", f"{p['p_mcnemar']:.3g}{verdict}",
                       *([f"{p['p_holm']:.3g}"] if _holm_shown(report) else []))
        console.print(pt)
    if report.get("methods"):
        console.print("[bold]Statistical methods[/]")
        for line in report["methods"]:
            console.print(f"  • {escape(line)}")
    console.print("[bold]Deviations from the paper's protocol[/]")
    for d in report["deviations"]:
        console.print(f"  • {escape(d)}")


def _holm_shown(report: dict) -> bool:
    return len(report["paired"]) > 1 and all("p_holm" in p for p in report["paired"])


def _paired_bench(p: dict, report: dict) -> str:
    """The benchmark of a paired row, with its training seed when the report has several."""
    multi = any(q.get("seed_index") for q in report["paired"])
    return p["benchmark"] + (f" (seed {p['seed_index'] + 1})" if multi else "")


def _paired_n(p: dict) -> str:
    return n_text(p.get("n_problems", p["n"]), p.get("samples_per_problem", 1))


def markdown(report: dict) -> str:
    benches = report_order({b for r in report["rows"] for b in r["benchmarks"]})
    out = [f"# {report['title']}", "", "| model | " + " | ".join(bench_title(b) + " % [95% CI]" for b in benches) + " |",
           "|---|" + "---|" * len(benches)]
    for r in report["rows"]:
        out.append(f"| {r['model']} | " + " | ".join(_cell_text(r["benchmarks"].get(b)) for b in benches) + " |")
    out += ["", "## Paper, Table 1 (Qwen2.5-32B-Instruct base)", "", "| model | AIME24 | MATH500 | GPQA Diamond |", "|---|---|---|---|"]
    for r in report["paper"]:
        out.append(f"| {r['model']} | " + " | ".join("-" if r.get(b) is None else f"{r[b]:.1f}" for b in ("aime24", "math500", "gpqa_diamond")) + " |")
    if report["paired"]:
        holm_col = _holm_shown(report)
        out += ["", "## Paired comparisons (diff = B - A)", "",
                "| A | B | benchmark | n | A % | B % | diff [95% CI] | A only / B only | p (exact) |" + (" Holm p |" if holm_col else ""),
                "|---|---|---|---|---|---|---|---|---|" + ("---|" if holm_col else "")]
        for p in report["paired"]:
            lo, hi = p["diff_ci95"]
            out.append(f"| {p['a']} | {p['b']} | {_paired_bench(p, report)} | {_paired_n(p)} | {_pct(p['acc_a'])} | {_pct(p['acc_b'])} | "
                       f"{100 * p['diff']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | {p['only_a']} / {p['only_b']} | {p['p_mcnemar']:.3g} |"
                       + (f" {p['p_holm']:.3g} |" if holm_col else ""))
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
