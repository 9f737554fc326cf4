"""`iwsft compare RUN_A RUN_B ...`: accuracies with intervals, paired tests, agreement per benchmark."""

from __future__ import annotations

HELP = "Compare evaluation runs: accuracy [95% CI], paired difference + exact McNemar, thinking tokens, agreement"


CHECKPOINTS_ONLY = ("Question answered: do these runs (checkpoints) differ on these problems? Whether two training "
                    "methods differ needs several seeds of each: `reproduce-table1 --seeds N`.")


def add_arguments(p):
    p.add_argument("runs", nargs="+", help="evaluation folders: `iwsft eval --out` model folders or run directories "
                                           "(NAME=PATH to label one)")
    p.add_argument("--out", default=None, help="also write compare.json / compare.md / compare.txt here")


def run(args) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from harness.core.errors import UserError
    from harness.core.io import atomic_write_json, atomic_write_text, check_writable_dir, ensure_writable_dir
    from harness.evaluation.benchmarks import clusters_for
    from harness.evaluation.metrics import PAIRED_UNIT_NOTE, accuracy_interval, n_text, paired_runs
    from harness.core.stats import points_interval
    from harness.evaluation.store import differing_settings, find_runs, setting_names

    if len(args.runs) < 2:
        raise UserError("give at least two runs to compare")
    from harness.commands import labelled_paths

    if args.out:
        check_writable_dir(Path(args.out), "--out")      # before printing anything
    labelled = []
    for label, path in labelled_paths(args.runs, "compare").items():
        p = Path(path)
        if not p.exists():
            raise UserError(f"{p} does not exist; give evaluation output folders (see `iwsft eval --out`)")
        labelled.append((label, find_runs(p)))
    console = _Tee(Console())       # the terminal at its own width (80 when piped); compare.txt at 150
    report = {"runs": [n for n, _ in labelled], "benchmarks": {},
              "definitions": {"accuracy": "mean over problems of the fraction of samples graded correct",
                              "n": "problems (x samples per problem when K > 1)", "paired": PAIRED_UNIT_NOTE}}
    benches = [b for b in dict.fromkeys(b for _, r in labelled for b in r)]
    # Every paired test of this call first: one Holm family over all of them (the tests that can reject), as
    # in the reports, so that several runs and benchmarks do not each get a 5% chance of a false "difference".
    from harness.paper.report import _holm_family, _verdict

    all_pairs = {}
    for bench in benches:
        have = [(n, r[bench]) for n, r in labelled if bench in r]
        for i in range(len(have)):
            for j in range(i + 1, len(have)):
                (na, ra), (nb, rb) = have[i], have[j]
                all_pairs[bench, na, nb] = paired_runs(ra, rb)
    holm_col = len(all_pairs) > 1
    if holm_col:
        _holm_family(list(all_pairs.values()), "p_mcnemar")
    any_k = False
    for bench in benches:
        have = [(n, r[bench]) for n, r in labelled if bench in r]
        t = Table(title=f"{bench}", title_justify="left")
        for col in ("run", "n", "accuracy % [95% CI]", "mean thinking tokens", "weights"):
            t.add_column(col, justify="left" if col in ("run", "weights") else "right",
                         overflow="fold" if col == "run" else "ellipsis")      # a run's name whole, over lines
        entry = {"runs": [], "paired": [], "agreement": {}}
        for n, r in have:
            k, np_ = r.samples_per_problem, len(r.outcomes)
            any_k |= k > 1
            acc = sum(r.scores.values()) / np_ if np_ else None
            ci, method = accuracy_interval(list(r.outcomes.values()), clusters_for(bench, r.outcomes))
            lo, hi = ci or (0.0, 1.0)
            th = sum(r.thinking.values()) / np_ if np_ else 0
            t.add_row(n, n_text(np_, k), "-" if acc is None else f"{100 * acc:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]",
                      f"{th:.0f}", r.weights_id or "-")
            entry["runs"].append({"run": n, "n": np_, "samples_per_problem": k, "accuracy": acc, "ci95": [lo, hi],
                                  "ci_method": method, "thinking_tokens_mean": th, "weights_id": r.weights_id,
                                  "no_room": len(r.no_room), "missing": len(r.missing), "path": str(r.path)})
        console.print(t)
        for n, r in have:
            if r.missing:
                console.print(f"[yellow]warning[/]: {n} ({bench}) is incomplete: {len(r.missing)} problem(s) asked for "
                              "are not stored yet (shards still to run, or an interrupted eval); it is compared on the rest")
            if r.no_room:
                console.print(f"[yellow]note[/]: {n} ({bench}): {len(r.no_room)} problem(s) not scored (no room under "
                              "the total budget)")
        # Different models are the point; other differing settings (budgets, Waits, samples) are
        # legitimate comparisons too, but the reader should know.
        differ = differing_settings([r.path for _, r in have], ignore=("model", "settings_sha256", "model_arg"))
        entry["settings_differ"] = differ
        if differ:
            console.print(f"[yellow]note[/]: these {bench} runs also differ in {', '.join(setting_names(differ))} (see each run's settings.json)")
        if len(have) >= 2:
            pt = Table(title=f"{bench}: paired (B - A) on common problems", title_justify="left", caption=CHECKPOINTS_ONLY,
                       caption_justify="left")
            for col in ("A", "B", "n", "diff % [95% CI]", "A only / B only", "p (exact)",    # both, neither: compare.json
                        *(["Holm p"] if holm_col else [])):
                pt.add_column(col, justify="left" if col in ("A", "B") else "right",
                              overflow="fold" if col in ("A", "B") else "ellipsis")
            pairs = {}
            for i in range(len(have)):
                for j in range(i + 1, len(have)):
                    (na, ra), (nb, rb) = have[i], have[j]
                    p = pairs[na, nb] = all_pairs[bench, na, nb]
                    lo, hi = p["diff_ci95"]
                    pcells = [f"{p['p_mcnemar']:.3g}"]
                    if holm_col:
                        pcells.append(("-" if p["p_holm"] is None else f"{p['p_holm']:.3g}") + _verdict(p, "p_mcnemar"))
                    else:
                        pcells[0] += _verdict(p, "p_mcnemar")
                    pt.add_row(na, nb, n_text(p["n_problems"], p["samples_per_problem"]),
                               f"{100 * p['diff']:+.1f} {points_interval(lo, hi)}",
                               f"{p['only_a']} / {p['only_b']}", *pcells)
                    entry["paired"].append({"a": na, "b": nb, **p})
            console.print(pt)
            for m in sorted({q["method"] for q in entry["paired"]}):
                console.print(f"method: {m}")
            # Agreement matrix: how many common problems (samples when K > 1) each pair got right together.
            at = Table(title=f"{bench}: right in both", caption="diagonal: each run's own; samples when K > 1",
                       title_justify="left", caption_justify="left")
            at.add_column("")
            for n, _ in have:
                at.add_column(n, justify="right")
            for na, ra in have:
                cells = []
                for nb, rb in have:
                    if na == nb:
                        both, total = sum(sum(v) for v in ra.outcomes.values()), len(ra.outcomes) * ra.samples_per_problem
                    else:
                        p = pairs.get((na, nb)) or pairs[nb, na]
                        both, total = p["both"], p["n"]
                    entry["agreement"].setdefault(na, {})[nb] = both
                    cells.append(f"{both}/{total}")
                at.add_row(na, *cells)
            console.print(at)
        report["benchmarks"][bench] = entry
    if any_k:
        console.print(f"{PAIRED_UNIT_NOTE[0].upper()}{PAIRED_UNIT_NOTE[1:]}.")
    if holm_col:
        from harness.paper.report import holm_lines

        for line in holm_lines(list(all_pairs.values()), []):
            console.print(line.replace("(checkpoint tests)", "(one family: every paired test above, all benchmarks)"))
        report["holm"] = "Holm over the paired tests of every benchmark that can reach p < 0.05 (Tarone 1990); p_holm"
    if args.out:
        out = ensure_writable_dir(Path(args.out))
        atomic_write_json(out / "compare.json", report)
        atomic_write_text(out / "compare.md", markdown(report))
        atomic_write_text(out / "compare.txt", console.text(width=150))
    return 0


class _Tee:
    """Prints to the terminal and keeps what was printed, to render it again for compare.txt at a file's
    width: a table is laid out for one width, and a terminal's is not a file's."""

    def __init__(self, console):
        self.console, self.items = console, []

    def print(self, *args, **kwargs) -> None:
        self.items.append((args, kwargs))
        self.console.print(*args, **kwargs)

    def text(self, width: int) -> str:
        import io

        from rich.console import Console

        file = Console(record=True, width=width, file=io.StringIO())
        for args, kwargs in self.items:
            file.print(*args, **kwargs)
        return file.export_text()


def markdown(report: dict) -> str:
    """compare.md: the same tables as the terminal output, from the JSON report."""
    from harness.core.stats import points_interval
    from harness.paper.report import _verdict

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    out = ["# Comparison of evaluation runs", "", "Runs: " + ", ".join(report["runs"])]
    if "definitions" in report:
        d = report["definitions"]
        out += ["", f"Accuracy: {d['accuracy']}; n: {d['n']}; paired: {d['paired']}."]
    for bench, e in report["benchmarks"].items():
        out += ["", f"## {bench}", "", "| run | n | accuracy % [95% CI] | mean thinking tokens | weights |",
                "|---|---|---|---|---|"]
        for r in e["runs"]:
            lo, hi = r["ci95"]
            out.append(f"| {r['run']} | {_n(r['n'], r.get('samples_per_problem', 1))} | {pct(r['accuracy'])} [{pct(lo)}, {pct(hi)}] | "
                       f"{r['thinking_tokens_mean']:.0f} | {r.get('weights_id') or '-'} |")
        if e["paired"]:
            holm = "holm" in report      # the same columns as the terminal table and compare.txt
            out += ["", f"### {bench}: paired (B - A) on common problems", "",
                    "| A | B | n | diff % [95% CI] | A only / B only | p (exact) |" + (" Holm p |" if holm else ""),
                    "|---|---|---|---|---|---|" + ("---|" if holm else "")]
            for p in e["paired"]:
                lo, hi = p["diff_ci95"]
                n = _n(p.get('n_problems', p['n']), p.get('samples_per_problem', 1))
                ns = _verdict(p, "p_mcnemar")
                cells = [f"{p['p_mcnemar']:.3g}"] + (["-" if p.get("p_holm") is None else f"{p['p_holm']:.3g}"] if holm else [])
                cells[-1] += ns
                out.append(f"| {p['a']} | {p['b']} | {n} | {100 * p['diff']:+.1f} {points_interval(lo, hi)} | "
                           f"{p['only_a']} / {p['only_b']} | " + " | ".join(cells) + " |")
            out += ["", CHECKPOINTS_ONLY] + [f"Method: {m}" for m in sorted({p["method"] for p in e["paired"]})]
        if e["agreement"]:
            names = list(e["agreement"])
            out += ["", f"### {bench}: right in both (diagonal: each run's own; samples when K > 1)", "",
                    "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for a in names:
                out.append(f"| {a} | " + " | ".join(str(e["agreement"][a].get(b, "-")) for b in names) + " |")
    return "\n".join(out) + "\n"


def _n(n: int, k: int) -> str:
    from harness.evaluation.metrics import n_text

    return n_text(n, k)
