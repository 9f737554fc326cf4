"""The recipe key `attention: sdpa | cudnn | flex` (harness/training/attention.py), as `iwsft bench --attention`.

- an unknown value: one line naming the choices, by a real run and by --check alike
- cudnn and flex without CUDA: one line with the reason before anything loads or is written; --check (which
  plans for GPUs) passes and notes it
- flex on CPU with the refusal lifted: the model loads with flex_attention, the no-grad reference pass runs
  through FlexAttention (packed rows: block masks from the position ids) into its own cache file and equals
  sdpa's to rounding, then torch refuses the first backward, which is why the trainer refuses flex on CPU (a
  canary: it fails once torch trains FlexAttention on CPU, and the refusal can go)
- sdpa (the default) is the run of before: an explicit attention=sdpa reuses the default run's reference cache
  and trains bitwise the same
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.cli import main


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _args(tiny_dir, out, ref, **kw):
    base = dict(model=tiny_dir / "model", dataset=tiny_dir / "data.jsonl", block_size=96, global_batch_size=4,
                micro_batch_size=2, learning_rate=1e-3, warmup_ratio=0.0, max_steps=2, weighting="iw-sft", seed=1,
                ref_cache_dir=ref, output_dir=out)
    base.update(kw)
    return ["train", "-", *(f"{k}={v}" for k, v in base.items())]


def _one_error_line(rc, err, *fragments):
    assert rc == 2, err
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    for f in fragments:
        assert f in lines[-1], err


def _flat(text: str) -> str:
    return "".join(text.split())     # rich may wrap a long line anywhere


def test_help_keys_lists_attention():
    rc, out, _ = _run(["train", "--help-keys"])
    assert rc == 0
    line = next(line for line in out.splitlines() if line.startswith("attention:"))
    assert "sdpa" in line and "cudnn" in line and "flex" in line and "block mask" in line


@pytest.mark.parametrize("check", [[], ["--check"]])
def test_unknown_attention_is_refused_in_one_line(tiny_dir, tmp_path, check):
    rc, _, err = _run([*_args(tiny_dir, tmp_path / "o", tmp_path / "ref", attention="flash"), *check])
    _one_error_line(rc, err, "attention 'flash' is not one of sdpa, cudnn, flex")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
@pytest.mark.parametrize("attention,why", [("cudnn", "cuDNN is CUDA-only"),
                                           ("flex", "torch's FlexAttention has no backward on CPU")])
def test_cuda_only_attention_is_refused_before_loading(tiny_dir, tmp_path, monkeypatch, attention, why):
    import harness.core.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model loaded before the refusal"))
    rc, out, err = _run(_args(tiny_dir, tmp_path / "o", tmp_path / "ref", attention=attention))
    _one_error_line(rc, err, f"attention={attention} needs a CUDA GPU ({why}); use attention=sdpa here")
    assert not (tmp_path / "o").exists() and not (tmp_path / "ref").exists()
    # --check plans the recipe for the GPUs it will run on: it passes, and says what training here would do
    rc, out, err = _run([*_args(tiny_dir, tmp_path / "o", tmp_path / "ref", attention=attention), "--check"])
    assert rc == 0, err
    assert _flat(f"attention={attention} needs a CUDA GPU ({why}): training on this machine would refuse it") \
        in _flat(out) and f"attention: {attention}" in out, out


def _final(run: Path) -> dict:
    return load_file(str(run / "final" / "model.safetensors"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="what torch does on CPU")
def test_flex_on_cpu_reference_pass_runs_then_torch_refuses_backward(tiny_dir, tmp_path, monkeypatch):
    import transformers.integrations.flex_attention as fa
    from rich.console import Console

    from harness.training import attention
    from harness.training.config import load_recipe
    from harness.training.refcache import load_cache
    from harness.training.trainer import train

    ref = tmp_path / "ref"
    rc, _, err = _run(_args(tiny_dir, tmp_path / "sdpa", ref, packing="true", max_steps=1))
    assert rc == 0, err[-2000:]
    (sdpa_file,) = ref.glob("*.safetensors")
    calls = []
    real = fa.compile_friendly_flex_attention
    monkeypatch.setattr(fa, "compile_friendly_flex_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(attention, "CUDA_ONLY", {"cudnn": "cuDNN is CUDA-only"})     # lift the flex refusal
    cfg = load_recipe(None, _args(tiny_dir, tmp_path / "flex", ref, packing="true", attention="flex")[2:])
    log = io.StringIO()
    with pytest.raises(NotImplementedError, match="FlexAttention does not support backward on CPU"):
        train(cfg, Console(file=log, width=400))
    assert "attention flex (flex_attention)" in log.getvalue(), log.getvalue()
    assert calls, "FlexAttention did not run"
    (flex_file,) = set(ref.glob("*.safetensors")) - {sdpa_file}     # its own cache: never sdpa's rounding
    from safetensors import safe_open

    with safe_open(str(flex_file), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    assert meta["layout"][-2:] == ["packed", "attention-flex"]
    a, b = load_cache(sdpa_file, meta), load_cache(flex_file, meta)
    assert a.keys() == b.keys() and len(a) == 12
    for k in a:       # packed rows: FlexAttention's block mask keeps each example to itself, as sdpa's mask
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5)


def test_default_is_sdpa_as_before(tiny_dir, tmp_path):
    """No key and attention=sdpa are one run: the model loads as before (transformers' default, SDPA), the same
    reference cache file serves both, and the weights are bitwise equal."""
    ref = tmp_path / "ref"
    rc, out, err = _run(_args(tiny_dir, tmp_path / "default", ref))
    assert rc == 0, err[-2000:]
    assert "reference log-probs: computed" in out and _flat("attention sdpa (sdpa)") in _flat(out), out
    rc, out, err = _run(_args(tiny_dir, tmp_path / "sdpa", ref, attention="sdpa"))
    assert rc == 0, err[-2000:]
    assert "reference log-probs: cached" in out, out
    a, b = _final(tmp_path / "default"), _final(tmp_path / "sdpa")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
