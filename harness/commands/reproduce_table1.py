"""`iwsft reproduce-table1`: train the Table 1 recipes, evaluate, report (the `just reproduce-table1` job)."""

from __future__ import annotations

HELP = "Train SFT / iw-SFT / per-step iw-SFT, evaluate them and the base model, print Table 1 beside the paper's"


def add_arguments(p):
    p.add_argument("--preset", default="tiny", help="evaluation suite in evals/: tiny (CPU laptop) or paper (8 x H100)")
    p.add_argument("--seeds", type=int, default=1, help="repeat training with N seeds; report mean and spread")
    p.add_argument("--out", default="reports/latest", help="report folder (table1.json/.md/.txt, figures)")
    p.add_argument("--limit", type=int, default=None, help="evaluate at most N problems per benchmark (smoke runs)")
    p.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe key applied to every recipe, e.g. max_steps=2 (repeatable; smoke runs)")


def check_args(args) -> None:
    """Every argument, before Figure 1, training or evaluation starts (and before --out is created)."""
    from pathlib import Path

    from harness.errors import UserError
    from harness.recipe import load_recipe
    from harness.suite import load_suite

    suite = load_suite(args.preset)
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.limit is not None and args.limit < 0:
        raise UserError(f"--limit must be >= 0, got {args.limit}")
    from harness.io import check_writable_dir

    check_writable_dir(Path(args.out), "--out")   # creates nothing
    for ov in args.train_override:
        if "=" not in ov:
            raise UserError(f"--train-override expects KEY=VALUE, got {ov!r} (e.g. max_steps=2)")
    for name in suite.recipes:      # a typo or a bad value in an override fails on every recipe alike
        load_recipe(suite.recipe_path(name), list(args.train_override))


def run(args) -> int:
    check_args(args)
    from harness.pipeline import reproduce_table1

    reproduce_table1(args.preset, seeds=args.seeds, out=args.out, limit=args.limit, train_overrides=args.train_override)
    return 0
