"""`iwsft bench`: the training-step benchmark (issue: iw-SFT at the cost of SFT)."""

from __future__ import annotations

HELP = ("Benchmark one training step of SFT vs iw-SFT layouts at Qwen2.5 shapes (GPU; on CPU only --shapes tiny, "
        "at small lengths and vocabulary unless given)")

# The GPU defaults; on CPU, --shapes tiny without --seq-lens/--vocab takes CPU_TINY_* (seconds, not 10 minutes
# of a 150k-vocabulary, 32k-token step). Defaults are recognised by their type, so an explicit
# `--seq-lens 4096` stays what the user asked for.
GPU_SEQ_LENS, GPU_VOCAB = "4096,8192,16384,32768", 151936
CPU_TINY_SEQ_LENS, CPU_TINY_VOCAB = "64,256", 2048


class _DefaultStr(str):
    pass


class _DefaultInt(int):
    pass


def add_arguments(p):
    p.add_argument("--shapes", default="0.5B,1.5B",
                   help="comma list of tiny, 0.5B, 1.5B, 7B (Qwen2.5 sizes, random weights; on CPU only tiny)")
    p.add_argument("--seq-lens", default=_DefaultStr(GPU_SEQ_LENS),
                   help=f"comma list of sequence lengths, one cell each (default {GPU_SEQ_LENS}; "
                        f"{CPU_TINY_SEQ_LENS} for tiny on CPU)")
    p.add_argument("--variants", default="sft,iw-cached,iw-periodic,naive-ref,naive-ref-q",
                   help="comma list of layouts: sft (w = 1), iw-cached (cached reference, what the recipes run), "
                        "iw-periodic (resident q copy), naive-ref (resident reference model), naive-ref-q (both)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per cell (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones (allocator, kernels)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak TFLOP/s for MFU (default: the card's dense bf16 spec, 989 on H100/H200 SXM; "
                        "docs/performance.md states the convention)")
    p.add_argument("--vocab", type=int, default=_DefaultInt(GPU_VOCAB),
                   help=f"vocabulary size (default {GPU_VOCAB}, Qwen2.5's; {CPU_TINY_VOCAB} for tiny on CPU)")
    p.add_argument("--no-checkpointing", action="store_true",
                   help="no activation checkpointing (faster when the activations fit: 1.5B/8k on an H100)")
    p.add_argument("--fused-head", action="store_true",
                   help="log-probs from hidden states, chunked (harness/training/fused_head.py): no whole [tokens x vocab] logits")
    p.add_argument("--fused-head-compile", action="store_true",
                   help="with --fused-head: torch.compile each chunk's forward and backward math (the trainer's "
                        "fused_head_compile=true)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each decoder layer in place (regional compilation; the trainer's "
                        "compile_layers=true)")
    p.add_argument("--foreach-optimizer", action="store_true",
                   help="torch's for-each AdamW instead of the fused one the trainer uses (for the before/after)")
    p.add_argument("--attention", default="sdpa", help="sdpa (torch picks: flash on Hopper), cudnn (SDPA's cuDNN kernel "
                   "only; CUDA) or flex (FlexAttention; CUDA)")
    p.add_argument("--micro-batch", type=int, default=1, help="full-length rows per step (torchtitan's figures: 2 x 8k)")
    p.add_argument("--out", default="reports/bench/train_step.json",
                   help="the JSON written after each cell (device, versions, settings, rows)")


def interrupt_hint(args) -> str:
    """What Ctrl-C leaves: the finished cells in --out; a benchmark does not resume."""
    return (f"interrupted; the cells finished so far are in {args.out}; a re-run measures every cell again "
            "(fewer with --shapes/--seq-lens/--variants)")


def resolve_cpu_defaults(args, on_gpu: bool) -> None:
    """On CPU: refuse GPU shapes; tiny without --seq-lens/--vocab gets lengths and a vocabulary that run in seconds."""
    if on_gpu:
        return
    from harness.core.errors import UserError

    big = [s for s in args.shapes.split(",") if s and s != "tiny"]
    if big:
        raise UserError(f"--shapes {','.join(big)} needs a GPU (no CUDA device here: one step would take hours); "
                        "on CPU run --shapes tiny")
    if isinstance(args.seq_lens, _DefaultStr):
        args.seq_lens = CPU_TINY_SEQ_LENS
    if isinstance(args.vocab, _DefaultInt):
        args.vocab = CPU_TINY_VOCAB


def run(args) -> int:
    import sys
    from pathlib import Path

    from rich.console import Console

    from harness.perf.train_bench import SHAPES, VARIANTS, bench_train_step, print_table, write
    from harness.core.errors import UserError
    from harness.core.io import check_output_file

    shapes = [s for s in args.shapes.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    bad = [s for s in shapes if s not in SHAPES] + [v for v in variants if v not in VARIANTS]
    if bad:
        raise UserError(f"unknown shape/variant {bad}; shapes: {', '.join(SHAPES)}; variants: {', '.join(VARIANTS)}")
    if not shapes or not variants:
        raise UserError(f"give at least one shape and one variant; shapes: {', '.join(SHAPES)}; variants: {', '.join(VARIANTS)}")
    import torch

    resolve_cpu_defaults(args, torch.cuda.is_available())
    try:
        seq_lens = [int(x) for x in args.seq_lens.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--seq-lens must be integers, got {args.seq_lens!r}") from None
    if not seq_lens or min(seq_lens) < 2:
        raise UserError(f"--seq-lens must be a comma list of lengths >= 2, got {args.seq_lens!r}")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1 (timed steps per cell), got {args.steps}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    if args.vocab < 1:
        raise UserError(f"--vocab must be >= 1, got {args.vocab}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise UserError(f"--peak-tflops must be positive, got {args.peak_tflops}")
    if args.micro_batch < 1:
        raise UserError(f"--micro-batch must be >= 1, got {args.micro_batch}")
    from harness.perf.train_bench import check_attention

    check_attention(args.attention, "cuda" if __import__("torch").cuda.is_available() else "cpu")
    if args.fused_head_compile and not args.fused_head:
        raise UserError("--fused-head-compile compiles the fused head's chunks; add --fused-head")
    check_output_file(Path(args.out), "--out")
    n_cells = len(shapes) * len(seq_lens) * len(variants)

    def on_row(partial):   # one line per cell on stderr: a long run shows it is moving
        write(partial, Path(args.out))
        r = partial["rows"][-1]
        t = "-" if r.get("step_time_s") is None else f"{r['step_time_s']:.3f} s/step"
        print(f"cell {len(partial['rows'])}/{n_cells}: {r['shape']} seq {r['seq_len']} {r['variant']}: "
              f"{r.get('status')}, {t}", file=sys.stderr, flush=True)

    result = bench_train_step(shapes, seq_lens, variants, steps=args.steps, warmup=args.warmup, vocab=args.vocab,
                              peak_tflops=args.peak_tflops, gradient_checkpointing=not args.no_checkpointing,
                              fused_head=args.fused_head, compile_layers=args.compile,
                              fused_optimizer=not args.foreach_optimizer, attention=args.attention,
                              micro_batch=args.micro_batch, on_row=on_row, fused_head_compile=args.fused_head_compile)
    print_table(result, Console(width=None if sys.stdout.isatty() else 200))   # piped: not cut at 80
    write(result, Path(args.out))
    print(f"wrote {args.out}")
    return 0
