"""`iwsft table1 --checkpoints name=path ...`: Table 1 for existing checkpoints, no training."""

from __future__ import annotations

HELP = "Evaluate existing checkpoints (e.g. ChongliQin/iw-SFT-32B, simplescaling/s1.1-32B) and print Table 1"


def add_arguments(p):
    p.add_argument("--checkpoints", nargs="+", required=True, metavar="NAME=PATH",
                   help="rows to evaluate: a label and a model (HF dir, hub id or smollm2-135m)")
    p.add_argument("--preset", default="paper", help="evaluation suite in evals/ (benchmarks, budgets, backend)")
    p.add_argument("--backend", default=None, help="override the suite's backend (hf, vllm)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N problems of each benchmark")
    p.add_argument("--out", default="reports/latest")


def run(args) -> int:
    from pathlib import Path

    from harness.errors import UserError
    from rich.console import Console

    from harness.pipeline import _eval, available_benchmarks
    from harness.report import build_table, write_report
    from harness.suite import load_suite

    suite = load_suite(args.preset)
    if args.backend:
        suite.backend = args.backend
    suite.benchmarks = available_benchmarks(suite, Console())   # a gated benchmark is probed once
    models = {}
    for item in args.checkpoints:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--checkpoints takes NAME=PATH pairs, got {item!r} (e.g. iw-sft=ChongliQin/iw-SFT-32B)")
        models[name] = path
    runs = {}
    for name, path in models.items():
        seed_runs = {}
        for bench, limit in suite.benchmarks.items():
            lim = args.limit if args.limit is not None else limit
            r = _eval(suite, path, bench, lim)
            if r is not None:
                seed_runs[bench] = r
        runs[name] = [seed_runs]
    from harness.pipeline import deviations

    names = list(models)
    paired = [[names[0], n] for n in names[1:]]
    report = build_table(runs, paired, deviations(suite, runs, {}), f"Table 1 for given checkpoints (suite {suite.name})",
                         extra={"checkpoints": models})
    write_report(report, Path(args.out))
    return 0
