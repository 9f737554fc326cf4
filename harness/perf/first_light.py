"""First light on a GPU (scripts/gpu_first_light.sh): the pieces that are not `iwsft` commands.

    python -m harness.perf.first_light make-model --shape 0.5B --tokenizer .gpu/tokenizer --out DIR
    python -m harness.perf.first_light check-train --uninterrupted M1.jsonl --resumed RUN_DIR --out JSON

`make-model` writes a random-init Qwen2.5-shaped model folder (with the carried tokenizer) that
`iwsft train` and `iwsft eval` load like any checkpoint: nothing can be downloaded on the device.
`check-train` reads the training logs and states, as one JSON, what first light must show: step-0
weights exactly 1, the loss falling, a resumed run equal to the uninterrupted one, tokens/s, MFU and
peak memory. It exits 1 when a check fails, so the script's log says so at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch


def make_model(shape: str, tokenizer_dir: str, out: str, seed: int = 0) -> dict:
    from transformers import AutoTokenizer

    from harness.perf.train_bench import qwen2_model

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    vocab = -(-len(tok) // 64) * 64   # the tokenizer's ids only: generation decodes every id it samples
    torch.manual_seed(seed)
    model = qwen2_model(shape, vocab, "cpu", max_positions=32768)
    model.config.bos_token_id, model.config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.generation_config.bos_token_id = model.config.bos_token_id
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = model.config.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"shape": shape, "vocab": vocab, "params": sum(p.numel() for p in model.parameters()), "path": out}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_train(uninterrupted: Path, resumed_dir: Path, resume_from: int) -> dict:
    """Checks on an uninterrupted run's metrics.jsonl and on the run resumed from step `resume_from`."""
    full, res = _rows(uninterrupted), _rows(resumed_dir / "metrics.jsonl")
    first = full[0]
    w_exact = (first["w_mean"] == 1.0 and first["w_max"] == 1.0 and first["logw_p05"] == 0.0
               and first["logw_p95"] == 0.0)
    k = max(1, len(full) // 4)
    fit = "nll" if all(r.get("nll") is not None for r in full) else "loss"   # iw-SFT's loss rises with its weights
    loss_start = statistics.mean(r[fit] for r in full[:k])
    loss_end = statistics.mean(r[fit] for r in full[-k:])
    after = {r["step"]: r for r in full if r["step"] > resume_from}
    redone = {r["step"]: r for r in res if r["step"] > resume_from}
    same_steps = sorted(after) == sorted(redone) and len(after) > 0
    dloss = max((abs(after[s]["loss"] - redone[s]["loss"]) for s in after if s in redone), default=None)
    rel = None if dloss is None else dloss / max(abs(statistics.mean(r["loss"] for r in after.values())), 1e-12)
    timed = full[1:] or full   # the first step pays for kernel selection and the allocator's growth
    mfus = [r["mfu"] for r in timed if r.get("mfu") is not None]
    checks = {
        "step0_weights_exactly_1": w_exact,
        "loss_falls": loss_end < loss_start,
        "final_saved": (resumed_dir / "final" / "config.json").is_file(),
        "resumed_same_steps": same_steps,
        # bf16 kernels are not bitwise deterministic run to run; a wrong resume (lost optimizer state, wrong
        # schedule or data order) moves the loss by far more than this
        "resumed_loss_within_2pct": rel is not None and rel <= 0.02,
    }
    return {
        "checks": checks, "ok": all(checks.values()),
        "steps": len(full), "resumed_from": resume_from,
        "step0": {k_: first[k_] for k_ in ("w_mean", "w_max", "logw_p05", "logw_p95", "ess_frac")},
        "fit_metric": fit, "fit_first_quarter": loss_start, "fit_last_quarter": loss_end,
        "loss_first_last": [full[0]["loss"], full[-1]["loss"]],
        "resumed_max_abs_loss_diff": dloss, "resumed_rel_loss_diff": rel,
        "tokens_per_step_median": statistics.median(r["tokens"] for r in full),
        "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in timed),
        "mfu_median": statistics.median(mfus) if mfus else None,
        "peak_mem_gb": max(r["peak_mem_gb"] for r in full),
        "step_time_s_median": statistics.median(r["step_time_s"] for r in timed),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.perf.first_light")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("--shape", required=True)
    m.add_argument("--tokenizer", required=True)
    m.add_argument("--out", required=True)
    c = sub.add_parser("check-train")
    c.add_argument("--uninterrupted", required=True, type=Path, help="metrics.jsonl of the uninterrupted run")
    c.add_argument("--resumed", required=True, type=Path, help="run folder resumed from --resume-from")
    c.add_argument("--resume-from", required=True, type=int)
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--extra", default="{}", help="JSON merged into the result (the run's settings)")
    a = p.parse_args(argv)
    if a.cmd == "make-model":
        print(json.dumps(make_model(a.shape, a.tokenizer, a.out)))
        return 0
    from harness.perf.train_bench import run_header

    res = {**run_header(torch.device("cuda" if torch.cuda.is_available() else "cpu")), **json.loads(a.extra),
           **check_train(a.uninterrupted, a.resumed, a.resume_from)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
