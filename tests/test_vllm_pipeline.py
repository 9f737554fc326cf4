"""One engine per model, counted on the real vLLM engine (vLLM's CPU build): `iwsft table1` and
`iwsft budget-sweep` on two models, each evaluated on several benchmarks or sweep cells, start one
engine per model, one model after another. (tests/test_pipeline.py counts the same on the HF backend
through the whole tiny `reproduce-table1`, training included.)

Runs in the vLLM virtual environment (`just test-vllm`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.cli import main

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture
def counted_starts(monkeypatch):
    """Every real vLLM engine start, by model path, in order."""
    from harness.evaluation.generation.vllm_backend import VLLMBackend

    starts, real = [], VLLMBackend.load.__func__
    monkeypatch.setattr(VLLMBackend, "load", classmethod(lambda cls, resolved, **kw: starts.append(str(resolved.path))
                                                         or real(cls, resolved, **kw)))
    return starts


def test_one_engine_per_model_table1_and_sweep(tmp_path, monkeypatch, counted_starts):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IWSFT_GPQA_CSV", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from harness.core.models import resolve_model
    from harness.paper.suite import suite_path

    # The tiny suite on vLLM, with fewer problems and sweep cells (a CPU engine, in CI).
    suite = yaml.safe_load(suite_path("tiny").read_text())
    suite.update(backend="vllm", benchmarks={"arith": 2, "math500": 1},
                 budget_sweep={"benchmarks": ["arith"], "limit": 2,
                               "cells": [{"thinking_budget": 8, "wait": 0}, {"thinking_budget": 16, "wait": 1}]})
    suite.pop("step_curve", None)
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(suite))
    # A second model: the same weights under another path (its own engine, its own run folders).
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in Path(resolve_model("smollm2-135m").path).iterdir():
        (copy / f.name).symlink_to(f)

    rc = main(["table1", "--checkpoints", "base=smollm2-135m", f"again={copy}", "--preset", "small.yaml",
               "--out", "rep"])
    assert rc == 0
    report = json.loads((tmp_path / "rep" / "table1.json").read_text())
    assert [sorted(r["benchmarks"]) for r in report["rows"]] == [["arith", "math500"]] * 2
    # 2 models x 2 benchmarks: one start per model, base first
    assert len(counted_starts) == 2 and counted_starts[1] == str(copy), counted_starts

    counted_starts.clear()
    rc = main(["budget-sweep", "base=smollm2-135m", f"again={copy}", "--preset", "small.yaml", "--out", "rep"])
    assert rc == 0
    fig2 = json.loads((tmp_path / "rep" / "figure2.json").read_text())
    assert {m: len(per["arith"]) for m, per in fig2["models"].items()} == {"base": 2, "again": 2}
    assert len(counted_starts) == 2 and counted_starts[1] == str(copy), counted_starts   # 2 models x 2 cells
