"""`iwsft reproduce-table1`: train the Table 1 recipes, evaluate, report (the `just reproduce-table1` job)."""

from __future__ import annotations

HELP = "Train SFT / iw-SFT / per-step iw-SFT, evaluate them and the base model, print Table 1 beside the paper's"


def _problems(text: str) -> int:
    """A whole number of problems (eval's --limit also takes a fraction; a suite's subsets are counts)."""
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a whole number of problems per benchmark, not {text!r} (a fraction "
                                         "of each benchmark: iwsft eval --limit 0.1)") from None
    return n                      # its range: check_arguments, with the other settings


def add_arguments(p):
    from harness.paper import preset_names

    p.add_argument("--preset", default="tiny",
                   help=f"evaluation suite: a preset in evals/ ({', '.join(preset_names())}; tiny runs on a CPU "
                        "laptop, paper needs 8 x H100) or the path of a suite YAML")
    p.add_argument("--seeds", type=int, default=None, help="repeat training with N seeds; report mean and spread "
                                                            "(default: the suite's seeds, 1 unless it says)")
    p.add_argument("--out", default="reports/latest", help="report folder (table1.json/.md/.txt, figures)")
    p.add_argument("--limit", type=_problems, default=None, help="evaluate at most N problems per benchmark (smoke runs)")
    p.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe key applied to every recipe, e.g. max_steps=2 (repeatable; smoke runs)")


def check_args(args) -> None:
    """Every argument, before Figure 1, training or evaluation starts (and before --out is created)."""
    from harness.paper.pipeline import check_arguments
    from harness.paper.suite import load_suite

    suite = load_suite(args.preset)
    check_arguments(suite, suite.seeds if args.seeds is None else args.seeds, args.limit, args.out, args.train_override)


def run(args) -> int:
    check_args(args)
    from harness.paper.pipeline import reproduce_table1

    reproduce_table1(args.preset, seeds=args.seeds, out=args.out, limit=args.limit, train_overrides=args.train_override)
    from pathlib import Path

    from rich.console import Console

    from harness.view.page import write_beside

    write_beside(Path(args.out), Console())      # view.html beside the report: every response, forced Waits marked
    return 0
