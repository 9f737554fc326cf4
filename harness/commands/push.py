"""`iwsft push CHECKPOINT --repo-id ORG/NAME`."""

from __future__ import annotations

HELP = "push a trained checkpoint to a hub model repo with a model card (final -> main, step N -> branch step-N)"


def _steps(text: str):
    if text.strip().lower() == "all":
        return "all"
    import argparse

    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected step numbers like 20,40 or 'all', not {text!r}") from None


def add_arguments(p):
    p.add_argument("checkpoint", help="RUN/final, RUN/checkpoints/step-N, or a training run folder RUN")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the hub model repo (created if missing)")
    p.add_argument("--steps", type=_steps, default=None, metavar="N[,N]|all",
                   help="with a run folder: also push these step checkpoints, each to a branch step-N")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--token", default=None, help="hub token (default: HF_TOKEN or the saved login)")


def run(args) -> int:
    from harness.publish import checkpoint

    checkpoint.push(args.checkpoint, args.repo_id, steps=args.steps, private=args.private, token=args.token)
    return 0
