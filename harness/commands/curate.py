"""`iwsft curate`: build a curated training set by sampling the reference model and filtering."""

from __future__ import annotations

from pathlib import Path

from harness.evaluation.generation import BACKEND_CHOICES

HELP = "Sample the reference model on a task's training split, keep graded-correct responses, write training JSONL"


def add_arguments(p):
    p.add_argument("--model", default="smollm2-135m", help="reference model (HF dir, hub id or smollm2-135m)")
    p.add_argument("--task", default="arith", help="task with a training split (arith, sums)")
    p.add_argument("--samples", type=int, default=4, help="samples per problem (K)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature (1 = the policy itself, as D+ assumes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="first N training problems only")
    p.add_argument("--thinking-budget", type=int, default=48, help="thinking cap in tokens (a positive integer)")
    p.add_argument("--answer-budget", type=int, default=16, help="answer tokens after the thinking")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="generation backend, as in `iwsft eval` (auto: vLLM where installed; on a GPU the D+ "
                        "regeneration of recipes/tiny/data needs it: >10k samples)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--eval-dir", default="runs/curate", help="where raw samples are kept (resumable)")
    p.add_argument("--require-natural-close", action="store_true",
                   help="keep only samples whose thinking stopped before the cap and whose answer ended by itself "
                        "(nothing forced but the delimiter after thinking, which training masks)")
    p.add_argument("--out", required=True, help="output JSONL (columns question, thinking, attempt, ...)")


def run(args) -> int:
    from rich.console import Console

    from harness.paper.curate import curate
    from harness.core.errors import UserError

    if args.samples < 1:
        raise UserError("--samples must be >= 1")
    s = curate(args.model, args.task, args.samples, Path(args.out), temperature=args.temperature, seed=args.seed,
               limit=args.limit, thinking_budget=args.thinking_budget, answer_budget=args.answer_budget,
               eval_dir=args.eval_dir, batch_size=args.batch_size, require_natural_close=args.require_natural_close,
               backend=args.backend)
    Console().print(f"kept {s['kept']} correct samples covering {s['problems_with_a_correct_sample']}/{s['problems']} "
                    f"problems (sample accuracy {s['accuracy']:.1%}"
                    + (f"; {s['dropped_not_natural']} correct samples dropped for a forced close" if args.require_natural_close else "")
                    + f") -> {args.out}")
    return 0
