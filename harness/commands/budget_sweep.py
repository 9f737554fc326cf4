"""`iwsft budget-sweep [MODEL ...]`: Figure 2, accuracy against average thinking tokens."""

from __future__ import annotations

HELP = "Figure 2: accuracy vs average thinking tokens over thinking budgets and forced 'Wait' counts"


def add_arguments(p):
    p.add_argument("models", nargs="*", help="checkpoints to sweep (NAME=PATH or PATH; a PATH is labelled by its "
                                             "folder name, so give NAME=PATH when two folders share a name); "
                                             "default: the preset's trained iw-sft and s1.1-sft finals")
    p.add_argument("--preset", default="tiny", help="evaluation suite in evals/ (its budget_sweep block)")
    p.add_argument("--out", default="reports/latest", help="folder for figure2.png and figure2.json")


def parse_models(items: list[str]) -> dict[str, str]:
    """NAME=PATH or PATH (labelled by its folder name) -> {label: path}. Two models with one label
    would overwrite each other in the figure: a UserError asking for NAME=PATH labels instead."""
    from pathlib import Path

    from harness.errors import UserError

    models: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if sep:
            name, path = name.strip(), path.strip()
            if not name or not path:
                raise UserError(f"budget-sweep takes NAME=PATH or PATH, got {item!r} (e.g. iw=runs/tiny/iw-sft/final)")
        else:
            path = item.strip()
            name = Path(path).name or path
        if name in models:
            first = models[name]
            a, b = Path(first).parent.name, Path(path).parent.name
            if not a or not b or a == b or "=" in a + b:
                a, b = f"{name}-1", f"{name}-2"
            raise UserError(f"two models are labelled {name!r} ({first} and {path}); label each as NAME=PATH, "
                            f"e.g. {a}={first} {b}={path}")
        models[name] = path
    return models


def run(args) -> int:
    from pathlib import Path

    from harness.errors import UserError
    from harness.pipeline import budget_sweep
    from harness.recipe import load_recipe
    from harness.suite import load_suite

    from harness.models import check_models

    suite = load_suite(args.preset)
    if not suite.budget_sweep:
        raise UserError(f"suite {suite.name} has no budget_sweep block; use a preset that has one (e.g. --preset tiny)")
    models = parse_models(args.models)
    if not models:
        for name in ("s1.1-sft", "iw-sft"):
            final = Path(load_recipe(suite.recipe_path(name)).output_dir) / "final"
            if not final.is_dir():
                raise UserError(f"no trained {name} at {final}; run `just reproduce-table1 {suite.name}` first or name checkpoints")
            models[name] = str(final)
    check_models(models.values())      # a wrong path fails here, before --out is created
    from harness.io import check_writable_dir

    out = check_writable_dir(Path(args.out), "--out")   # creates nothing
    budget_sweep(suite, models, out)
    return 0
