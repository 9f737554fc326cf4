"""The recipe key `fused_head_compile` (harness/training/fused_head.py): the fused head's chunk math through
torch.compile.

- equals the eager path to rounding, values and the gradients of hidden states and head, with a last chunk
  shorter than the others (37 tokens, chunks of 8)
- another tail length reuses the compiled graphs (the tail is compiled with dynamic shapes), a no-grad
  pass (the reference cache's) gives bitwise what the training forward gives
- refused without fused_lm_head, in one line, before anything is written; `iwsft train --help-keys` lists it
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch._dynamo.utils import counters

from harness.cli import main
from harness.training import fused_head
from harness.training.fused_head import fused_token_logprobs


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _inputs(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, 16, generator=g).requires_grad_()
    w = torch.randn(50, 16, generator=g).requires_grad_()
    t = torch.randint(0, 50, (n,), generator=g)
    dy = torch.randn(n, generator=g)          # not all ones: the backward's incoming gradient matters
    return h, w, t, dy


def _value_and_grads(h, w, t, dy, compiled):
    out = fused_token_logprobs(h, w, t, chunk_size=8, compiled=compiled)
    gh, gw = torch.autograd.grad((out * dy).sum(), (h, w))
    return out, gh, gw


def test_compiled_equals_eager_float32():
    torch._dynamo.reset()
    fused_head._compiled.clear()
    counters.clear()
    graphs = []
    for n, seed in ((37, 0), (35, 1)):    # 4 full chunks of 8 and a tail of 5 tokens; then a tail of 3
        h, w, t, dy = _inputs(n, seed)
        eager = _value_and_grads(h, w, t, dy, compiled=False)
        comp = _value_and_grads(h, w, t, dy, compiled=True)
        for name, a, b in zip(("log-probs", "grad hidden", "grad weight"), comp, eager):
            assert a.dtype == b.dtype and a.shape == b.shape, name
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
        assert not torch.equal(comp[0], torch.zeros_like(comp[0]))
        graphs.append(counters["stats"]["unique_graphs"])
    assert set(fused_head._compiled) == {"full", "tail"}
    # forward and backward, full chunk and dynamic tail: 4 graphs, and the second tail length compiled nothing
    assert graphs == [4, 4], graphs
    with torch.no_grad():     # the reference pass: the same graph, so step-0 weights stay exactly 1
        ref = fused_token_logprobs(h, w, t, chunk_size=8, compiled=True)
    assert torch.equal(ref, comp[0]) and counters["stats"]["unique_graphs"] == 4


def _args(tiny_dir, out, ref, **kw):
    base = dict(model=tiny_dir / "model", dataset=tiny_dir / "data.jsonl", block_size=96, global_batch_size=4,
                micro_batch_size=2, learning_rate=1e-3, warmup_ratio=0.0, max_steps=2, weighting="iw-sft", seed=1,
                ref_cache_dir=ref, output_dir=out)
    base.update(kw)
    return ["train", "-", *(f"{k}={v}" for k, v in base.items())]


def test_refused_without_fused_lm_head(tiny_dir, tmp_path):
    rc, _, err = _run(_args(tiny_dir, tmp_path / "o", tmp_path / "ref", fused_head_compile="true"))
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == ("error: fused_head_compile=true compiles the fused LM head's chunks; set fused_lm_head=true too, "
                        "or fused_head_compile=false"), err
    assert not (tmp_path / "o").exists() and not (tmp_path / "ref").exists()


def test_help_keys_lists_it():
    rc, out, _ = _run(["train", "--help-keys"])
    assert rc == 0
    line = next(line for line in out.splitlines() if line.startswith("fused_head_compile:"))
    assert "fused_lm_head=true" in line and "torch.compile" in line


def test_trains_like_the_eager_fused_head(tiny_dir, tmp_path):
    """A tiny iw-SFT run: the reference cache (its own, by its key) goes through the compiled head, so step-0
    weights are exactly 1; the weights after 3 steps equal the eager fused head's to rounding."""
    import json

    from safetensors.torch import load_file

    runs = {}
    fused_head._compiled.clear()
    for name, extra in (("eager", {}), ("comp", {"fused_head_compile": "true"})):
        rc, out, err = _run(_args(tiny_dir, tmp_path / name, tmp_path / "ref", fused_lm_head="true", max_steps=3, **extra))
        assert rc == 0, err[-2000:]
        assert "reference log-probs: computed" in out, out      # the compiled run does not reuse eager's cache
        runs[name] = tmp_path / name
        assert bool(fused_head._compiled) == bool(extra)      # 190 tokens a micro-batch: the tail function only
    m = [json.loads(line) for line in (runs["comp"] / "metrics.jsonl").read_text().splitlines()]
    assert m[0]["w_mean"] == 1.0 and m[0]["logw_p05"] == m[0]["logw_p95"] == 0.0 and m[-1]["w_mean"] != 1.0
    a, b = (load_file(str(runs[k] / "final" / "model.safetensors")) for k in ("eager", "comp"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5)


def test_bench_flag(tmp_path):
    """`iwsft bench --fused-head --fused-head-compile`: a row with the option in its settings, step-0 weights
    exactly 1 (the cached reference went through the same compiled head); without --fused-head: one line."""
    import json

    out = tmp_path / "head.json"
    rc, text, err = _run(["bench", "--shapes", "tiny", "--seq-lens", "48", "--steps", "1", "--warmup", "0", "--vocab", "300",
                          "--variants", "sft,iw-cached", "--fused-head", "--fused-head-compile", "--out", str(out)])
    assert rc == 0, err[-2000:]
    res = json.loads(out.read_text())
    assert res["settings"]["fused_head"] and res["settings"]["fused_head_compile"]
    assert [r["w_step0"] for r in res["rows"]] == [1.0, 1.0]
    assert res["rows"][1]["fast_vs_simple_max_abs_weight"] < 1e-5
    rc, _, err = _run(["bench", "--shapes", "tiny", "--fused-head-compile", "--out", str(tmp_path / "x.json")])
    assert rc == 2 and err.strip().splitlines() == ["error: --fused-head-compile compiles the fused head's chunks; add --fused-head"], err
