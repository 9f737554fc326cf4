"""The trainer runs what the benchmark runs: diagnostics only on logged steps (same training, same logged
numbers), backward outside autocast, MFU by the stated convention (harness/core/flops.py)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.training.config import load_recipe
from harness.training.trainer import train

TIMING = {"tokens_per_s", "mfu", "model_tflops_per_s", "peak_mem_gb", "step_time_s"}


def _cfg(tiny_dir, tmp_path, name, **kw):
    base = dict(model=str(tiny_dir / "model"), dataset=str(tiny_dir / "data.jsonl"), block_size=96,
                global_batch_size=4, micro_batch_size=2, learning_rate=3e-3, warmup_ratio=0.0, max_steps=4,
                output_dir=str(tmp_path / name), ref_cache_dir=str(tmp_path / "ref"), seed=1, weighting="iw-sft")
    base.update(kw)
    return load_recipe(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in base.items()])


def _metrics(run_dir):
    return {r["step"]: r for r in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines())}


def test_logging_less_often_trains_the_same_and_logs_the_same_numbers(tiny_dir, tmp_path):
    every = train(_cfg(tiny_dir, tmp_path, "every", log_every=1))
    sparse = train(_cfg(tiny_dir, tmp_path, "sparse", log_every=2))
    a, b = load_file(str(every / "model.safetensors")), load_file(str(sparse / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    ma, mb = _metrics(tmp_path / "every"), _metrics(tmp_path / "sparse")
    assert sorted(mb) == [1, 3, 4] and sorted(ma) == [1, 2, 3, 4]
    for step, row in mb.items():
        assert row["update_norm"] > 0 and row["grad_norm"] > 0
        assert {k: v for k, v in row.items() if k not in TIMING} == {k: v for k, v in ma[step].items() if k not in TIMING}


def test_backward_runs_outside_autocast(tiny_dir, tmp_path, monkeypatch):
    """Under bf16-mixed the trainer's forward runs in autocast; its backward must not (the cast cache would
    live through it). Autocast is forced on here in a float32 process (accelerate allows one precision per process)."""
    from accelerate import Accelerator

    seen = []
    monkeypatch.setattr(Accelerator, "autocast", lambda self, *a, **k: torch.autocast("cpu", dtype=torch.bfloat16))
    backward = Accelerator.backward

    def spy(self, loss, **kw):
        seen.append(torch.is_autocast_enabled("cpu"))
        return backward(self, loss, **kw)

    monkeypatch.setattr(Accelerator, "backward", spy)
    train(_cfg(tiny_dir, tmp_path, "ac", max_steps=1))
    assert seen and not any(seen)
    assert _metrics(tmp_path / "ac")[1]["w_mean"] == 1.0


def test_mfu_in_the_log_follows_the_stated_convention(tiny_dir, tmp_path):
    """MFU = (6 N_dense x tokens + 12 L h d x sum of each document's length^2) / time / peak; packed rows count
    each document's own length, so packing leaves the model FLOPs of a step unchanged."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(tiny_dir / "model")
    n = sum(t.numel() for t in load_file(str(tiny_dir / "model/model.safetensors")).values())
    dense = n - (0 if c.tie_word_embeddings else c.vocab_size * c.hidden_size)
    coeff = 12 * c.num_hidden_layers * c.num_attention_heads * (c.hidden_size // c.num_attention_heads)
    train(_cfg(tiny_dir, tmp_path, "pad", max_steps=2, peak_tflops=1e-6))
    train(_cfg(tiny_dir, tmp_path, "pack", max_steps=2, peak_tflops=1e-6, packing=True))
    for run in ("pad", "pack"):
        for r in _metrics(tmp_path / run).values():
            flops = r["model_tflops_per_s"] * 1e12 * r["step_time_s"]
            attn = flops - 6 * dense * r["tokens"]
            # the attention share: between every document at the shortest and at the longest possible length
            assert coeff * r["tokens"] * 8 < attn < coeff * r["tokens"] * 96, (attn, r)
            assert r["mfu"] == pytest.approx(r["model_tflops_per_s"] / 1e-6, rel=1e-9)
    pad, pack = _metrics(tmp_path / "pad"), _metrics(tmp_path / "pack")
    for s in pad:
        fp = pad[s]["model_tflops_per_s"] * pad[s]["step_time_s"]
        assert fp == pytest.approx(pack[s]["model_tflops_per_s"] * pack[s]["step_time_s"], rel=1e-9)
