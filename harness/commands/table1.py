"""`iwsft table1 --checkpoints name=path ...`: Table 1 for existing checkpoints, no training."""

from __future__ import annotations

HELP = "Evaluate existing checkpoints (e.g. ChongliQin/iw-SFT-32B, simplescaling/s1.1-32B) and print Table 1"

def add_arguments(p):
    p.add_argument("--checkpoints", nargs="+", required=True, metavar="NAME=PATH",
                   help="rows to evaluate: a label and a model (HF dir, hub id or smollm2-135m); "
                        "the first row is compared with each of the others")
    p.add_argument("--preset", default="paper",
                   help="evaluation suite in evals/ (benchmarks, budgets, backend); default paper: the full "
                        "benchmarks on vLLM (GPUs); use --preset tiny for a CPU run")
    p.add_argument("--backend", default=None, help="override the suite's backend (auto, or a name in harness.evaluation.generation.BACKENDS)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N problems of each benchmark")
    p.add_argument("--out", default="reports/latest", help="report folder (table1.json/.md/.txt)")


def run(args) -> int:
    from pathlib import Path

    from harness.core.errors import UserError

    # Every argument is checked before the (slow, possibly networked) benchmark probe.
    from harness.commands import labelled_paths

    models = labelled_paths(args.checkpoints, "--checkpoints", require_name=True)
    if args.limit is not None and args.limit < 0:
        raise UserError(f"--limit must be >= 0, got {args.limit}")
    if args.backend is not None:
        from harness.evaluation.generation import resolve_backend_kind

        resolve_backend_kind(args.backend)
    from harness.paper.suite import load_suite

    suite = load_suite(args.preset)
    if args.backend:
        suite.settings.backend = args.backend
    from harness.core.io import check_writable_dir

    out = check_writable_dir(Path(args.out), "--out")   # creates nothing
    from harness.core.models import check_models

    check_models(models.values())   # a typo fails here, in one line, before any probing or evaluation

    from rich.console import Console

    from harness.paper.evaluations import Evaluations
    from harness.paper.pipeline import available_benchmarks, deviations
    from harness.paper.report import build_table, write_report

    if args.limit is not None:
        # The limit replaces the suite's subsets, so the report's "Subsets" line says what ran.
        suite.benchmarks = {b: args.limit for b in suite.benchmarks}
    suite.benchmarks = available_benchmarks(suite, Console())   # a gated benchmark is probed once
    runs = {}
    with Evaluations(suite) as evals:     # one engine per model, models one after another
        for name, path in models.items():
            seed_runs = {}
            protocol = suite.base_protocol if name == "base" else "s1"   # a row named base: the suite's base protocol
            for bench, limit in suite.benchmarks.items():
                r = evals.run(path, bench, limit, protocol=protocol)
                if r is not None:
                    seed_runs[bench] = r
            runs[name] = [seed_runs]
        aggregates = {name: evals.aggregates[path] for name, path in models.items() if path in evals.aggregates}

    names = list(models)
    paired = [[names[0], n] for n in names[1:]]
    report = build_table(runs, paired, deviations(suite, runs, {}), f"Table 1 for given checkpoints (suite {suite.name})",
                         extra={"checkpoints": models, **({"aggregates": aggregates} if aggregates else {})})
    console = write_report(report, out)
    if aggregates:
        from harness.evaluation.aggregates import aggregate_line

        for name, per in aggregates.items():     # the suite's aggregates (e.g. open-r1's avg@16), per row
            for bench, aggs in per.items():
                console.print(aggregate_line(f"{name} {bench}", aggs), markup=False, highlight=False, soft_wrap=True)
    from harness.view.page import write_beside

    write_beside(Path(out), console)      # view.html: every response of the runs in the table
    return 0
