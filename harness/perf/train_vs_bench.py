"""`iwsft train` against `iwsft bench` on the same shape and options: is what users run as fast, and as small,
as what the benchmark measured?

    iwsft bench-train --shape 1.5B --seq-len 8192 --tokenizer .gpu/tokenizer --out OUT.json
        [--fused-head [--fused-head-compile]] [--no-checkpointing] [--compile] [--attention sdpa|cudnn|flex]
        [--steps 5] [--warmup 2]

Both run in their own process on a random-init Qwen2.5 shape (the model folder `first_light make-model` writes, so
both have the tokenizer's vocabulary): the trainer through `python -m harness train` (iw-SFT, cached reference,
lag-0 q, micro-batch 1, one example of exactly seq-len tokens a step, truncated from a longer row), the bench's
`iw-cached` variant, which is the same step. Step time: the median over the timed steps (the trainer's
metrics.jsonl, logged every step). Peak: the GPU's max allocated memory in each; on a CPU each process's max RSS
(the bench has no peak there), which at tiny shapes is mostly the Python and torch import. Prints and writes the
ratios (targets: time <= 1.05x, peak <= 1.02x).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TARGETS = {"time": 1.05, "peak": 1.02}


def _run(cmd: list[str], log: Path) -> float:
    """Run to completion; return the process's max RSS in GiB (os.wait4: this child's own, not all children's)."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (rc {proc.returncode}); its log {log}:\n{tail}")
    return usage.ru_maxrss / 2**20


def _rows(seq_len: int, n: int) -> list[dict]:
    """Rows far longer than seq_len tokens (truncated to it): a prompt of about a tenth, as the bench's batch."""
    words = [f" w{i % 97}" for i in range(4 * seq_len)]
    return [{"question": "".join(words[k : k + seq_len // 10]), "response": "".join(words[k:])} for k in range(n)]


def compare(shape: str, seq_len: int, tokenizer: str, work: Path, steps: int = 5, warmup: int = 2,
            fused_head: bool = False, checkpointing: bool = True, compile_layers: bool = False,
            attention: str = "sdpa", fused_head_compile: bool = False) -> dict:
    import torch

    from harness.perf.first_light import make_model
    from harness.perf.train_bench import run_header

    py = sys.executable
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"model-{shape}"
    info = make_model(shape, tokenizer, str(model)) if not (model / "config.json").is_file() else \
        {"vocab": json.loads((model / "config.json").read_text())["vocab_size"]}
    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(seq_len, steps + warmup)))
    run = work / "train"
    args = [f"model={model}", f"dataset={data}", "completion_column=response", f"block_size={seq_len}",
            "truncation=truncate", "weighting=iw-sft", "q_source=lag0", "micro_batch_size=1", "global_batch_size=1",
            f"max_steps={steps + warmup}", "learning_rate=1e-6", "warmup_ratio=0", "log_every=1", "save_every=null",
            f"gradient_checkpointing={str(checkpointing).lower()}", f"fused_lm_head={str(fused_head).lower()}",
            f"compile_layers={str(compile_layers).lower()}", f"attention={attention}",
            f"fused_head_compile={str(fused_head_compile).lower()}", f"output_dir={run}", f"ref_cache_dir={work / 'ref'}"]
    import shutil

    shutil.rmtree(run, ignore_errors=True)
    train_rss = _run([py, "-m", "harness", "train", "-", *args], work / "train.log")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timed = rows[warmup:] or rows
    assert all(r["tokens"] == seq_len for r in rows), [r["tokens"] for r in rows]   # the same shape as the bench's
    bench_json = work / "bench.json"
    bench = [py, "-m", "harness", "bench", "--shapes", shape, "--seq-lens", str(seq_len), "--variants", "iw-cached",
             "--steps", str(steps), "--warmup", str(warmup), "--vocab", str(info["vocab"]), "--out", str(bench_json)]
    bench += ["--fused-head"] * fused_head + ["--no-checkpointing"] * (not checkpointing) + ["--compile"] * compile_layers
    bench += ["--attention", attention] + ["--fused-head-compile"] * fused_head_compile
    bench_rss = _run(bench, work / "bench.log")
    b = json.loads(bench_json.read_text())["rows"][0]
    gpu = torch.cuda.is_available()
    t_train = statistics.median(r["step_time_s"] for r in timed)
    peak_train = max(r["peak_mem_gb"] for r in rows) if gpu else train_rss
    peak_bench = b["peak_mem_gib"] if gpu else bench_rss
    res = {**run_header(torch.device("cuda" if gpu else "cpu")),
           "settings": {"shape": shape, "seq_len": seq_len, "vocab": info["vocab"], "steps": steps, "warmup": warmup,
                        "fused_head": fused_head, "gradient_checkpointing": checkpointing, "compile_layers": compile_layers,
                        "attention": attention, "fused_head_compile": fused_head_compile,
                        "variant": "iw-cached (trainer: weighting=iw-sft, q_source=lag0)", "micro_batch": 1,
                        "peak": "torch.cuda.max_memory_allocated" if gpu else "process max RSS (CPU: imports included)"},
           "train": {"step_time_s": t_train, "peak_gib": peak_train, "mfu": statistics.median(r["mfu"] for r in timed)
                     if all(r.get("mfu") is not None for r in timed) else None},
           "bench": {"step_time_s": b["step_time_s"], "peak_gib": peak_bench, "mfu": b.get("mfu")},
           "targets": TARGETS}
    res["time_ratio"] = t_train / b["step_time_s"]
    res["peak_ratio"] = peak_train / peak_bench
    res["met"] = {"time": res["time_ratio"] <= TARGETS["time"], "peak": res["peak_ratio"] <= TARGETS["peak"]}
    return res


def add_arguments(p) -> None:
    p.add_argument("--shape", default="tiny", help="tiny, 0.5B, 1.5B or 7B (random-init Qwen2.5 shapes)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--tokenizer", default=".gpu/tokenizer", help="a tokenizer folder (the GPU scripts carry .gpu/tokenizer)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--fused-head", action="store_true", help="the chunked LM head and loss (trainer: fused_lm_head=true)")
    p.add_argument("--fused-head-compile", action="store_true",
                   help="the fused head's chunk math through torch.compile (trainer: fused_head_compile=true; needs --fused-head)")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "cudnn", "flex"],
                   help="attention kernel (trainer: attention=...; cudnn and flex need a CUDA GPU)")
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", required=True, type=Path)


def run(a) -> int:
    from harness.core.errors import UserError
    from harness.perf.train_bench import SHAPES

    if a.shape not in SHAPES:
        raise UserError(f"unknown shape {a.shape!r}; use one of {', '.join(SHAPES)}")
    if a.seq_len < 16 or a.steps < 1 or a.warmup < 0:
        raise UserError(f"--seq-len must be >= 16, --steps >= 1, --warmup >= 0 (got {a.seq_len}, {a.steps}, {a.warmup})")
    if not Path(a.tokenizer, "tokenizer_config.json").is_file():
        raise UserError(f"--tokenizer {a.tokenizer} is not a tokenizer folder; make one with: python -c \"from "
                        "harness.core.models import load_tokenizer as t; t('smollm2-135m').save_pretrained('.gpu/tokenizer')\"")
    if a.fused_head_compile and not a.fused_head:
        raise UserError("--fused-head-compile compiles the fused head's chunks; add --fused-head")
    import torch

    from harness.perf.train_bench import check_attention

    check_attention(a.attention, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        res = compare(a.shape, a.seq_len, a.tokenizer, Path(a.work or tmp), a.steps, a.warmup, a.fused_head,
                      not a.no_checkpointing, a.compile, a.attention, a.fused_head_compile)
    from harness.core.io import atomic_write_text

    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(res, indent=1) + "\n")
    t, b = res["train"], res["bench"]
    print(f"iwsft train vs iwsft bench, {a.shape} / {a.seq_len} tokens on {res['device']}:")
    print(f"  step time  train {t['step_time_s']:.4f} s  bench {b['step_time_s']:.4f} s  ratio {res['time_ratio']:.3f} "
          f"(target <= {TARGETS['time']})")
    print(f"  peak       train {t['peak_gib']:.3f} GiB  bench {b['peak_gib']:.3f} GiB  ratio {res['peak_ratio']:.3f} "
          f"(target <= {TARGETS['peak']}; {res['settings']['peak']})")
    print(f"wrote {a.out}")
    return 0
