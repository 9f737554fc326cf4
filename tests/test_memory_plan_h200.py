"""The memory plan against the card: every committed H200 row that the plan models (eager SFT and iw-SFT with a
cached reference, one process, bf16-mixed, reports/bench/) must lie at or under the plan, and the plan within 10%
above it. Compiled rows are not planned (inductor frees what the formula counts); the naive layouts are not
what the trainer runs."""

import json
from pathlib import Path

import pytest

from harness.perf.train_bench import SHAPES
from harness.training.memory_plan import GiB, Architecture, Launch, plan

ROOT = Path(__file__).resolve().parents[1]


def _rows():
    out = []
    for f in sorted((ROOT / "reports/bench").glob("train_step_*.json")):
        d = json.loads(f.read_text())
        s = d["settings"]
        if "H200" not in d.get("device", "") or s.get("compile_layers") or s.get("attention", "sdpa") != "sdpa":
            continue
        for r in d["rows"]:
            if r["variant"] in ("sft", "iw-cached") and r.get("peak_mem_gib"):
                out.append(pytest.param(s, r, id=f"{f.stem}-{r['variant']}-{r['seq_len']}"))
    return out


ROWS = _rows()


def test_there_are_rows_to_check():
    assert len(ROWS) >= 7


@pytest.mark.parametrize("settings,row", ROWS)
def test_plan_is_within_10_percent_above_the_measured_peak(settings, row):
    h, L, nh, kv, inter = SHAPES[row["shape"]]
    arch = Architecture(hidden=h, intermediate=inter, layers=L, heads=nh, kv_heads=kv, head_dim=h // nh,
                        vocab=settings["vocab"], tied=row["shape"] != "7B", qkv_bias=True)     # train_bench.qwen2_model
    assert arch.n_params() == row["params"]
    p = plan(arch, Launch(gpu=True), dtype="bf16-mixed", micro_batch_size=settings.get("micro_batch", 1),
             block_size=row["seq_len"], gradient_checkpointing=settings["gradient_checkpointing"],
             fused_lm_head=settings["fused_head"], gpu_memory_gib=141, global_batch_size=1)   # the bench: one micro-batch a step
    measured = row["peak_mem_gib"]
    assert measured <= p.peak / GiB <= 1.10 * measured, (p.peak / GiB, measured)
