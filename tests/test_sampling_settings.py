"""top_k, min_p, presence_penalty, repetition_penalty: vLLM's meaning on the HF backend, the vLLM
adapter's SamplingParams, validation (one line, exit 2) and the run-folder key (only when set)."""

from __future__ import annotations

import pytest
import torch

from harness.cli import main
from harness.core.errors import UserError
from harness.evaluation.config import EvalConfig, validate
from harness.evaluation.generation.base import GenParams
from harness.evaluation.generation.hf import HFBackend
from harness.evaluation.generation.sampling import Penalties, settings_entries, truncate

PROMPTS = [[1, 4093, 198, 1780, 314, 216, 34, 27, 35], [1, 520, 9690, 198, 2683, 359]]


# ------------------------------------------------------------------------------ the formulas


def test_repetition_penalty_is_vllms_formula_on_prompt_and_output():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0, -0.25, 0.0])
    pen = Penalties(1.5, 0.0, prompt_ids=[0, 1, 1])
    pen.push(4)
    got = pen.apply(logits)
    # vLLM: logit / p where > 0, logit * p otherwise, for tokens in the prompt or the output
    want = torch.tensor([2.0 / 1.5, -1.0 * 1.5, 0.5, 3.0, -0.25 * 1.5, 0.0])
    assert torch.allclose(got, want)
    assert torch.equal(logits, torch.tensor([2.0, -1.0, 0.5, 3.0, -0.25, 0.0]))      # input untouched


def test_presence_penalty_counts_generated_tokens_once_and_not_the_prompt():
    logits = torch.tensor([1.0, 1.0, 1.0, 1.0])
    pen = Penalties(1.0, 0.75, prompt_ids=[0, 1])
    assert pen.apply(logits).tolist() == [1.0, 1.0, 1.0, 1.0]        # nothing generated yet: prompt ignored
    for t in (2, 2, 2, 1):
        pen.push(t)
    assert pen.apply(logits).tolist() == [1.0, 0.25, 0.25, 1.0]      # once per distinct token, whatever its count
    assert not Penalties(1.0, 0.0, [0]).active and Penalties(1.0, -0.5, []).active


def test_min_p_then_top_k_truncation():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = lambda x: torch.isfinite(x).tolist()  # noqa: E731
    assert kept(truncate(logits, 2, 0.0)) == [True, True, False, False]
    assert kept(truncate(logits, 0, 0.5)) == [True, True, False, False]     # 0.15 < 0.5 x 0.5
    assert kept(truncate(logits, 0, 0.2)) == [True, True, True, False]
    assert kept(truncate(logits, 1, 0.2)) == [True, False, False, False]
    assert truncate(logits, 0, 0.0) is logits                               # off: the same tensor


# ------------------------------------------------------------------------------ the HF backend


def _run(backend, **kw):
    return [o.token_ids for o in backend.generate(PROMPTS, GenParams(max_new_tokens=8, **kw))]


def test_top_k_1_and_min_p_1_at_temperature_1_equal_greedy(tiny_model):
    model, tok = tiny_model
    b = HFBackend(model, tok, batch_size=4)
    greedy = _run(b)
    assert _run(b, temperature=1.0, seed=5) != greedy              # plain sampling differs (random model)
    assert _run(b, temperature=1.0, seed=5, top_k=1) == greedy
    assert _run(b, temperature=1.0, seed=5, min_p=1.0) == greedy
    assert _run(b, temperature=1.0, seed=5, top_k=40) != greedy


def test_neutral_values_change_nothing(tiny_model):
    model, tok = tiny_model
    b = HFBackend(model, tok, batch_size=4)
    sampled = _run(b, temperature=1.0, seed=5)
    assert _run(b, temperature=1.0, seed=5, top_k=-1, min_p=0.0, presence_penalty=0.0, repetition_penalty=1.0) == sampled
    assert _run(b, top_k=1, min_p=0.9) == _run(b)                  # greedy ignores top_k / min_p (as vLLM)


def _reference_greedy(model, prompt, n, rep, presence):
    """Greedy decoding with vLLM's penalty formulas written out, the full sequence re-run every step."""
    ids, out = list(prompt), []
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float().clone()
        for t in set(ids):                                          # repetition: prompt and output
            logits[t] = logits[t] / rep if logits[t] > 0 else logits[t] * rep
        for t in set(out):                                          # presence: output only, once
            logits[t] -= presence
        out.append(int(torch.argmax(logits)))
        ids.append(out[-1])
    return out


@pytest.mark.parametrize("rep,presence", [(1.3, 0.0), (1.0, 2.0), (0.7, -1.0), (1.2, 0.5)])
def test_greedy_penalties_equal_the_written_out_formula(tiny_model, rep, presence):
    model, tok = tiny_model
    b = HFBackend(model, tok, batch_size=4)
    got = [o.token_ids for o in b.generate(PROMPTS, GenParams(max_new_tokens=10, repetition_penalty=rep,
                                                              presence_penalty=presence))]
    assert got == [_reference_greedy(model, p, 10, rep, presence) for p in PROMPTS]
    assert got != _run(b) or rep == 1.0     # the penalty did something on this model


@pytest.mark.slow
def test_repetition_penalty_changes_the_real_models_greedy_text(smollm2):
    model, tok = smollm2
    b = HFBackend(model, tok, batch_size=2)
    from harness.evaluation.generation.prompts import PRESETS, build_prompt_ids

    prompt = build_prompt_ids(tok, "Repeat after me: 1 1 1 1 1 1 1 1", delimiters=PRESETS["plain"])
    plain = b.generate([prompt], GenParams(max_new_tokens=12))[0].token_ids
    penalised = b.generate([prompt], GenParams(max_new_tokens=12, repetition_penalty=1.8))[0].token_ids
    assert penalised != plain


# ------------------------------------------------------------------------------ vLLM's SamplingParams


def test_vllm_sampling_params_carry_the_settings(monkeypatch):
    import sys
    import types

    from harness.evaluation.generation.vllm_backend import VLLMBackend

    class SP:
        def __init__(self, **kw):
            self.kw = kw

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=SP))
    b = VLLMBackend.__new__(VLLMBackend)
    b._vllm = sys.modules["vllm"]
    kw = b.sampling_params(GenParams(max_new_tokens=4, temperature=0.6, top_k=20, min_p=0.05, presence_penalty=1.5,
                                     repetition_penalty=1.1)).kw
    assert (kw["top_k"], kw["min_p"], kw["presence_penalty"], kw["repetition_penalty"]) == (20, 0.05, 1.5, 1.1)
    assert b.sampling_params(GenParams(max_new_tokens=4)).kw["top_k"] == -1     # off: vLLM 0.6 refuses 0


# ------------------------------------------------------------------------------ validation and the key


@pytest.mark.parametrize("kw,needle", [
    ({"top_k": -2}, "--top-k"), ({"top_k": 1.5}, "--top-k"), ({"min_p": 1.5}, "--min-p"), ({"min_p": -0.1}, "--min-p"),
    ({"repetition_penalty": 0.0}, "--repetition-penalty"), ({"repetition_penalty": float("nan")}, "--repetition-penalty"),
    ({"presence_penalty": 2.5}, "--presence-penalty"),
])
def test_bad_values_are_one_line(kw, needle):
    with pytest.raises(UserError, match=needle):
        validate(EvalConfig(model="smollm2-135m", backend="hf", **kw))


@pytest.mark.parametrize("flags,needle", [(["--top-k", "-3"], "--top-k"), (["--min-p", "2"], "--min-p"),
                                          (["--repetition-penalty", "0"], "--repetition-penalty")])
def test_cli_bad_values_exit_2(tmp_path, capsys, flags, needle):
    out = tmp_path / "runs"
    assert main(["eval", "--model", "smollm2-135m", "--benchmarks", "arith", "--backend", "hf", "--out", str(out),
                 *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not out.exists()


def test_run_folder_key_only_when_set(monkeypatch):
    from test_engine_settings import _settings

    from harness.evaluation import store

    base = _settings(monkeypatch, temperature=0.6)
    assert not {"top_k", "min_p", "presence_penalty", "repetition_penalty"} & set(base)   # old folders keep their key
    h = store.settings_hash(base)
    assert store.settings_hash(_settings(monkeypatch, temperature=0.6, top_k=-1, min_p=0.0)) == h
    for kw in ({"top_k": 20}, {"min_p": 0.05}, {"presence_penalty": 1.0}, {"repetition_penalty": 1.05}):
        assert store.settings_hash(_settings(monkeypatch, temperature=0.6, **kw)) != h, kw
    # greedy ignores top_k / min_p (vLLM resets them), not the penalties
    greedy = store.settings_hash(_settings(monkeypatch))
    assert store.settings_hash(_settings(monkeypatch, top_k=20, min_p=0.1)) == greedy
    assert store.settings_hash(_settings(monkeypatch, repetition_penalty=1.1)) != greedy
    assert settings_entries(EvalConfig(model="m", temperature=1.0, top_k=5)) == {"top_k": 5}
