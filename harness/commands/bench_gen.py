"""`iwsft bench-gen`: HF generation tokens/s with and without budget forcing (issue: performance)."""

from __future__ import annotations

HELP = "Benchmark HF-backend generation with and without budget forcing at the same total tokens (GPU; --shape tiny on CPU)"


def add_arguments(p):
    p.add_argument("--shape", default="0.5B", help="random-init Qwen2.5 shape: tiny, 0.5B, 1.5B, 7B")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=1024, help="generated tokens per prompt (thinking + answer)")
    p.add_argument("--answer-tokens", type=int, default=64, help="of which the answer round (forced run)")
    p.add_argument("--waits", type=int, default=2, help="Waits injected in the forced run")
    p.add_argument("--tokenizer", default="smollm2-135m",
                   help="tokenizer for the delimiters and decoding (a model alias or a folder with tokenizer files)")
    p.add_argument("--repeats", type=int, default=1, help="runs per mode (the fastest is reported)")
    p.add_argument("--out", default="runs/bench/generation.json",
                   help="the JSON written (device, versions, settings, both runs' tokens/s); the default is under "
                        "runs/ (not tracked) so a try leaves reports/bench/generation.json, the measured H200 result, "
                        "as it is")


def run(args) -> int:
    import sys
    from pathlib import Path

    from rich.console import Console

    from harness.perf.train_bench import SHAPES, write
    from harness.perf.gen_bench import bench_generation, print_table
    from harness.core.errors import UserError
    from harness.core.io import check_output_file
    from harness.core.models import load_tokenizer

    if args.shape not in SHAPES:
        raise UserError(f"unknown shape {args.shape!r}; shapes: {', '.join(SHAPES)}")
    if not 0 < args.answer_tokens < args.new_tokens or args.waits < 0 or args.prompts < 1:
        raise UserError("need 0 < --answer-tokens < --new-tokens, --waits >= 0 and --prompts >= 1")
    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1 (runs per mode), got {args.repeats}")
    if args.prompt_len < 1:
        raise UserError(f"--prompt-len must be >= 1 token, got {args.prompt_len}")
    check_output_file(Path(args.out), "--out")
    tokenizer = load_tokenizer(args.tokenizer)
    from harness.evaluation.generation.prompts import S1, delimiter_ids

    head = len(delimiter_ids(tokenizer, S1).think_prefix)
    if args.prompt_len < head:
        raise UserError(f"--prompt-len {args.prompt_len} is shorter than the think prefix it ends with ({head} tokens); "
                        f"use --prompt-len >= {head}")
    result = bench_generation(tokenizer, shape=args.shape, prompts=args.prompts,
                              prompt_len=args.prompt_len, new_tokens=args.new_tokens, answer_tokens=args.answer_tokens,
                              waits=args.waits, repeats=args.repeats)
    print_table(result, Console(width=None if sys.stdout.isatty() else 200))   # piped: not cut at 80
    write(result, Path(args.out))
    print(f"wrote {args.out}")
    return 0
