"""The pieces of scripts/gpu_next_call.sh that are not `iwsft` commands (a device call returns at most 8 files,
so every part's results go into one JSON as each part finishes):

    python -m harness.perf.device_call card --out FILE           the card: bf16 GEMM rate, device copy bandwidth
    python -m harness.perf.device_call profile --shape S --seq-len T --out FILE
                                                                 one training step under torch.profiler,
                                                                 kernel time by category
    python -m harness.perf.device_call merge RESULTS PART STATUS [FILE ...]
                                                                 RESULTS[PART] = {status, the files' JSON}, atomically
    python -m harness.perf.device_call split RESULTS DIR         each part's benchmark files back out (for
                                                                 `iwsft bench-report`)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def card(device=None) -> dict:
    import torch

    from harness.core.flops import CONVENTION, matmul_tflops, spec_peak_tflops
    from harness.perf.train_bench import run_header

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    n = 8192 if gpu else 256
    out = {**run_header(device), "matmul_tflops": matmul_tflops(device, n=n, iters=50 if gpu else 3),
           "matmul": f"{n}x{n} {'bf16' if gpu else 'float32'}", "mfu_convention": CONVENTION}
    out["spec_peak_tflops"] = spec_peak_tflops(out["device"])
    nbytes = (2**30 if gpu else 2**24)
    a = torch.empty(nbytes, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    if gpu:
        torch.cuda.synchronize()
    t0, reps = time.perf_counter(), 20 if gpu else 3
    for _ in range(reps):
        b.copy_(a)
    if gpu:
        torch.cuda.synchronize()
    out["copy_gb_per_s"] = 2 * nbytes * reps / (time.perf_counter() - t0) / 1e9   # read + write
    if gpu:
        out["memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return out


CATEGORIES = (("attention", ("flash", "fmha", "attention", "sdpa", "cudnn", "flex")),
              ("gemm", ("gemm", "matmul", "cutlass", "sm90", "mm", "addmm", "linear", "bmm")),
              ("optimizer", ("adam", "multi_tensor", "fused_adam")),
              ("copy / cast", ("copy", "memcpy", "to_copy", "cast", "fill")),
              ("reduction / softmax", ("reduce", "softmax", "logsumexp", "norm", "sum")),
              ("elementwise", ("elementwise", "vectorized", "mul", "add", "exp", "silu", "neg", "sub", "div")))


def category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def profile_step(shape: str, seq_len: int, vocab: int = 151936, fused_head: bool = False,
                 gradient_checkpointing: bool = True) -> dict:
    """One SFT step (after a warm-up step), kernel (GPU) or op (CPU) self time grouped by category. SFT's step:
    iw-cached's is the same plus elementwise weights (1.00x its time on the H200), and the bench's iw-cached cell
    adds checks (reference cost, textbook path) that are no part of a step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from harness.perf.train_bench import _batch, make_model, run_header, run_variant

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    torch.manual_seed(0)
    model = make_model(shape, vocab, device, gradient_checkpointing)
    batch = _batch(seq_len, vocab, device)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu)

    run_variant("sft", model, batch, 1, 1, autocast, fused_head)           # warm-up: kernels chosen, allocator grown
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=acts) as prof:
        run_variant("sft", model, batch, 1, 0, autocast, fused_head)
    by: dict[str, float] = {}
    top = []
    for e in prof.key_averages():
        t = (e.self_device_time_total if gpu else e.self_cpu_time_total) / 1e6
        if gpu and e.device_type.name != "CUDA" or t <= 0:
            continue
        c = category(e.key)
        by[c] = by.get(c, 0.0) + t
        top.append((t, e.key[:80], c))
    total = sum(by.values())
    return {**run_header(device), "shape": shape, "seq_len": seq_len, "timer": "CUDA kernel self time" if gpu else
            "CPU op self time", "note": "one SFT step: forward, backward, clip, fused AdamW",
            "total_s": total, "by_category_s": dict(sorted(by.items(), key=lambda kv: -kv[1])),
            "by_category_share": {k: v / total for k, v in sorted(by.items(), key=lambda kv: -kv[1])} if total else {},
            "top_kernels": [{"s": t, "name": n, "category": c} for t, n, c in sorted(top, reverse=True)[:15]]}


def merge(results: Path, part: str, status: str, files: list[Path]) -> dict:
    from harness.core.io import atomic_write_text

    data = json.loads(results.read_text()) if results.is_file() else {"parts": {}}
    entry: dict = {"status": status}
    for f in files:
        try:
            entry[f.name] = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            entry[f.name] = {"missing": str(e)[:200]}
    data["parts"][part] = entry
    results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results, json.dumps(data, indent=1) + "\n")
    return data


def split(results: Path, out_dir: Path) -> list[Path]:
    """Each part's benchmark files (the ones with rows and settings) written to out_dir under their own names."""
    from harness.core.io import atomic_write_text

    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in json.loads(results.read_text())["parts"].values():
        for name, body in entry.items():
            if isinstance(body, dict) and "rows" in body and "settings" in body:
                atomic_write_text(out_dir / name, json.dumps(body, indent=1) + "\n")
                written.append(out_dir / name)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.perf.device_call")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("card")
    c.add_argument("--out", required=True, type=Path)
    pr = sub.add_parser("profile")
    pr.add_argument("--shape", required=True)
    pr.add_argument("--seq-len", required=True, type=int)
    pr.add_argument("--vocab", type=int, default=151936)
    pr.add_argument("--fused-head", action="store_true")
    pr.add_argument("--out", required=True, type=Path)
    m = sub.add_parser("merge")
    m.add_argument("results", type=Path)
    m.add_argument("part")
    m.add_argument("status")
    m.add_argument("files", nargs="*", type=Path)
    s = sub.add_parser("split")
    s.add_argument("results", type=Path)
    s.add_argument("out_dir", type=Path)
    a = p.parse_args(argv)
    if a.cmd in ("card", "profile"):
        res = card() if a.cmd == "card" else profile_step(a.shape, a.seq_len, a.vocab, a.fused_head)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps({k: v for k, v in res.items() if k != "top_kernels"}, indent=1))
    elif a.cmd == "merge":
        merge(a.results, a.part, a.status, a.files)
    else:
        for f in split(a.results, a.out_dir):
            print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
