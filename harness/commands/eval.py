"""`iwsft eval`: offline evaluation of a checkpoint on AIME24, MATH500 and GPQA Diamond."""

from __future__ import annotations

import argparse

from harness.core.errors import UserError
from harness.evaluation.generation import BACKEND_CHOICES

HELP = "evaluate a model on AIME24 / MATH500 / GPQA Diamond (s1 protocol, resumable)"


def _thinking_budget(text: str):
    t = text.strip().lower()
    if t == "auto":
        return "auto"
    if t in ("none", "off"):
        return None
    try:
        v = int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a token count, 'auto' or 'none', not {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError("must be >= 1 (or 'none' for no cap)")
    return v


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(p):
    p.add_argument("--model", required=True,
                   help="local HF checkpoint dir, hub id, or the alias smollm2-135m")
    p.add_argument("--benchmarks", type=_csv_list, default=["aime24", "math500", "gpqa_diamond"],
                   help="comma-separated (default: aime24,math500,gpqa_diamond)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="generation backend; auto = vLLM when installed with a GPU, else HF")
    p.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    p.add_argument("--ids", type=_csv_list, nargs="+", default=None, metavar="ID",
                   help="problem ids (comma or space separated); with several benchmarks write BENCHMARK:ID")
    p.add_argument("--max-new-tokens", type=int, default=32768,
                   help="s1's total budget per request (max_gen_toks, 32768); like s1, the 'auto' cap and "
                        "the answer's room count the prompt inside it")
    p.add_argument("--thinking-budget", type=_thinking_budget, default="auto",
                   help="thinking cap in tokens, 'auto' (s1: total - longest prompt of the benchmark - "
                        "len(close) - 100) or 'none'")
    p.add_argument("--answer-budget", type=int, default=None,
                   help="max answer tokens after thinking (default: what is left of the total)")
    p.add_argument("--wait", type=int, default=0,
                   help="times to suppress the end of thinking and append 'Wait' (budget forcing)")
    p.add_argument("--budget-mode", choices=["independent", "s1-compat"], default="independent",
                   help="independent: exact cap per request; s1-compat: s1's round loop (cap can be exceeded)")
    p.add_argument("--delimiters", default="s1",
                   help="thinking/answer delimiters preset: s1 (<|im_start|>think/answer), think-tags, or plain "
                        "(no think prefix, no thinking phase, no cap: the response is the whole answer)")
    p.add_argument("--samples", type=int, default=1, help="samples per problem (K); K>1 needs --temperature > 0")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (s1)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpqa-csv", default=None, metavar="PATH",
                   help="local GPQA Diamond CSV (dataset columns); default $IWSFT_GPQA_CSV, else the hub")
    p.add_argument("--benchmark-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option of a chosen benchmark's loader, repeatable; unknown keys are refused "
                        "(arith: arith_level=add1|add2|sub1|mul1, arith_split=test|train; "
                        "gpqa_diamond: gpqa_prompt=s1|simple-evals, default s1)")
    p.add_argument("--system", default=None, help="system message (default: the chat template's own)")
    p.add_argument("--out", default="runs/eval", help="output root (default runs/eval)")
    p.add_argument("--dtype", default="auto",
                   help="auto (float32 on hf, the checkpoint's on vllm) | float32 | bfloat16 | float16; "
                        "s1 used float32 on vLLM")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM tensor parallelism")
    p.add_argument("--batch-size", type=int, default=None, help="requests per backend call")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_benchmark_options(benchmarks: list[str], options: dict) -> None:
    """Option keys must be read by one of the chosen benchmarks (a typo is not ignored), and their
    values must load: checked on the public benchmarks' data now, before any model is loaded."""
    from harness.evaluation.benchmarks import check_options, get_benchmark

    if not options:
        return
    if "gpqa_csv" in options:
        raise UserError("give the GPQA CSV with --gpqa-csv PATH, not --benchmark-option gpqa_csv=...")
    for b in benchmarks:
        get_benchmark(b)        # an unknown benchmark name is reported as such first
    check_options(benchmarks, options)
    for b in benchmarks:
        spec = get_benchmark(b)
        if spec.public and any(k in spec.options for k in options):
            spec.load({k: v for k, v in options.items() if k in spec.options})


def config_from_args(args):
    from harness.evaluation.config import EvalConfig

    ids = None
    if args.ids is not None:
        ids = [i for group in args.ids for i in group]
        if not ids:
            raise UserError("--ids given without any id")
    options = {}
    for item in args.benchmark_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--benchmark-option expects KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    check_benchmark_options(list(args.benchmarks), options)
    if args.tensor_parallel_size < 1:
        raise UserError("--tensor-parallel-size must be >= 1")
    return EvalConfig(
        model=args.model, benchmarks=list(args.benchmarks), backend=args.backend, limit=args.limit,
        ids=ids, max_new_tokens=args.max_new_tokens, thinking_budget=args.thinking_budget,
        answer_budget=args.answer_budget, budget_mode=args.budget_mode, delimiters=args.delimiters,
        wait=args.wait, samples=args.samples, temperature=args.temperature, top_p=args.top_p,
        seed=args.seed, gpqa_csv=args.gpqa_csv, benchmark_options=options, out=args.out, dtype=args.dtype,
        tensor_parallel_size=args.tensor_parallel_size, batch_size=args.batch_size,
        system=args.system, progress=not args.no_progress,
    )


def run(args) -> int:
    from harness.evaluation.config import validate
    from harness.evaluation.runner import run_eval

    cfg = config_from_args(args)
    validate(cfg)          # every setting, before the model loads (run_eval checks again for library callers)
    results = run_eval(cfg)
    ran = [m for m in results.values() if "skipped" not in m]
    return 0 if ran else 2
