"""`iwsft budget-sweep [MODEL ...]`: Figure 2, accuracy against average thinking tokens."""

from __future__ import annotations

HELP = "Figure 2: accuracy vs average thinking tokens over thinking budgets and forced 'Wait' counts"


def add_arguments(p):
    p.add_argument("models", nargs="*", help="checkpoints to sweep (NAME=PATH or PATH; a PATH is labelled by its "
                                             "folder name, so give NAME=PATH when two folders share a name); "
                                             "default: the preset's trained iw-sft and s1.1-sft finals")
    p.add_argument("--preset", default="tiny", help="evaluation suite in evals/ (its budget_sweep block)")
    p.add_argument("--out", default="reports/latest", help="folder for figure2.png and figure2.json")


def run(args) -> int:
    from pathlib import Path

    from harness.core.errors import UserError
    from harness.paper.pipeline import budget_sweep
    from harness.training.config import load_recipe
    from harness.paper.suite import load_suite

    from harness.core.models import check_models

    suite = load_suite(args.preset)
    if not suite.budget_sweep:
        raise UserError(f"suite {suite.name} has no budget_sweep block; use a preset that has one (e.g. --preset tiny)")
    from harness.commands import labelled_paths

    models = labelled_paths(args.models, "budget-sweep")
    if not models:
        for name in ("s1.1-sft", "iw-sft"):
            final = Path(load_recipe(suite.recipe_path(name)).output_dir) / "final"
            if not final.is_dir():
                raise UserError(f"no trained {name} at {final}; run `just reproduce-table1 {suite.name}` first or name checkpoints")
            models[name] = str(final)
    check_models(models.values())      # a wrong path fails here, before --out is created
    from harness.core.io import check_writable_dir

    out = check_writable_dir(Path(args.out), "--out")   # creates nothing
    budget_sweep(suite, models, out)
    from rich.console import Console

    from harness.view.page import write_beside

    write_beside(out, Console())      # view.html beside figure2.json: the sweep's responses, forced Waits marked
    return 0
