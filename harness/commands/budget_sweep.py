"""`iwsft budget-sweep [MODEL ...]`: Figure 2, accuracy against average thinking tokens."""

from __future__ import annotations

HELP = "Figure 2: accuracy vs average thinking tokens over thinking budgets and forced 'Wait' counts"


def add_arguments(p):
    p.add_argument("models", nargs="*", help="checkpoints to sweep (NAME=PATH or PATH); default: the preset's trained "
                                             "iw-sft and s1.1-sft finals")
    p.add_argument("--preset", default="tiny", help="evaluation suite in evals/ (its budget_sweep block)")
    p.add_argument("--out", default="reports/latest")


def run(args) -> int:
    from pathlib import Path

    from harness.errors import UserError
    from harness.pipeline import budget_sweep
    from harness.recipe import load_recipe
    from harness.suite import load_suite

    suite = load_suite(args.preset)
    models = {}
    for item in args.models:
        name, sep, path = item.partition("=")
        models[name if sep else Path(item).name] = path if sep else item
    if not models:
        for name in ("s1.1-sft", "iw-sft"):
            final = Path(load_recipe(suite.recipe_path(name)).output_dir) / "final"
            if not final.is_dir():
                raise UserError(f"no trained {name} at {final}; run `just reproduce-table1 {suite.name}` first or name checkpoints")
            models[name] = str(final)
    budget_sweep(suite, models, Path(args.out))
    return 0
