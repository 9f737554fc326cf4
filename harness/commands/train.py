"""`iwsft train RECIPE [key=value ...]`."""

from __future__ import annotations

HELP = "Train SFT / iw-SFT / per-step iw-SFT from a YAML recipe (key=value overrides any recipe key)"


def add_arguments(p):
    p.add_argument("recipe", nargs="?", help="YAML recipe, e.g. recipes/tiny/iw-sft.yaml")
    p.add_argument("overrides", nargs="*", help="key=value pairs, e.g. max_steps=2 output_dir=/tmp/run")
    p.add_argument("--help-keys", action="store_true", help="list every recipe key with its documentation")
    p.set_defaults(_trailing="overrides")    # key=value pairs may also follow the flags
    p.add_argument("--check", action="store_true",
                   help="validate the recipe (and a local dataset's rows, and output_dir), print it and its memory plan "
                        "per GPU; refuse a plan that does not fit; train nothing")


def run(args) -> int:
    from rich.console import Console
    from rich.markup import escape

    from harness.core.errors import UserError
    from harness.training.config import field_docs, load_recipe

    import sys

    console = Console(soft_wrap=not sys.stdout.isatty())     # a log: one line per event, not wrapped at 80
    if args.help_keys:
        for key, doc in field_docs().items():
            console.print(f"[bold]{key}[/]: {escape(' '.join(doc.split()))}")
        return 0
    if args.recipe is None:
        raise UserError("give a recipe, e.g. `iwsft train recipes/tiny/iw-sft.yaml` (or --help-keys to list keys)")
    recipe = None if args.recipe == "-" else args.recipe
    cfg = load_recipe(recipe, args.overrides)
    if args.check:
        import yaml

        from harness.core.io import check_writable_dir
        from harness.training.data import check_rows, is_local, load_rows

        check_writable_dir(cfg.output_dir, "output_dir")
        from harness.core.models import ALIASES, resolve_model

        if cfg.model.strip().lower() not in ALIASES:   # as the real run refuses it (an alias converts on first use)
            resolve_model(cfg.model)
        if is_local(cfg.dataset):        # a hub dataset is checked when training loads it
            check_rows(load_rows(cfg.dataset, cfg.dataset_split, getattr(cfg, "_recipe_dir", None)), cfg)

        console.print(escape(yaml.safe_dump(cfg.to_dict(), sort_keys=False)))
        from harness.training import memory_plan

        plan = memory_plan.plan_recipe(cfg)
        if plan is None:
            console.print(f"[yellow]memory plan: skipped[/]: no config.json of {escape(cfg.model)} on this machine "
                          "(set model_config=PATH to plan offline)")
        else:
            console.print(memory_plan.table(plan))
            memory_plan.check(plan)
            console.print(f"memory plan fits: {plan.summary()}; {escape(plan.launch.describe())}")
        from harness.training.attention import CUDA_ONLY

        if cfg.attention in CUDA_ONLY and not __import__("torch").cuda.is_available():   # planned here, run on a GPU
            console.print(f"[yellow]note[/]: attention={cfg.attention} needs a CUDA GPU ({CUDA_ONLY[cfg.attention]}): "
                          "training on this machine would refuse it")
        console.print(f"[green]ok[/]: {args.recipe}")
        return 0
    if cfg.push_to_hub:                  # a bad repo id or no token: said now, not after hours of training
        from harness.publish import hub

        hub.check_repo_id(cfg.push_to_hub, "push_to_hub")
        hub.token()
    from harness.training.trainer import train

    final = train(cfg, console)
    if cfg.push_to_hub:
        from accelerate import PartialState

        if PartialState().is_main_process:
            from harness.publish import checkpoint

            checkpoint.push(final.parent, cfg.push_to_hub, steps=cfg.push_steps, private=cfg.hub_private,
                            console=console.print)
    return 0
