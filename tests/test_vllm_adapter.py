"""The vLLM adapter's mapping, against a fake `vllm` module standing for vLLM on GPUs (what a CPU engine
cannot show: tensor parallelism, GPU memory settings, and output cases that are hard to provoke). The
real engine (vLLM's CPU build) is tested in tests/test_vllm_engine.py."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest

from harness.core.errors import UserError
from harness.evaluation.generation.base import GenParams

EOS, STOP = 2, 7


class CharTokenizer:
    """Each id decodes to a fixed string; enough for the adapter's normalisation."""

    vocab = {0: "", 1: "<|im_start|>", 2: "<|im_end|>", 3: "a", 4: "b", 5: "c", 6: " d", 7: "#",
             10: "ab", 11: "c<", 12: "|y", 13: "\n"}
    eos_token_id = EOS

    def decode(self, ids, **kw):
        return "".join(self.vocab[i] for i in ids)


def make_fake_vllm(outputs_for):
    """A fake vllm module recording LLM(...) and generate(...) arguments.

    outputs_for(prompt_ids, sampling_params) -> (token_ids, finish_reason, stop_reason)
    """
    mod = types.ModuleType("vllm")
    mod.__version__ = "0.0-fake"
    rec = SimpleNamespace(llm_kwargs=None, calls=[])

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            rec.llm_kwargs = kw

        def get_tokenizer(self):
            return CharTokenizer()

        def generate(self, prompts, sampling_params=None, *, use_tqdm=True):
            rec.calls.append((prompts, sampling_params, use_tqdm))
            sps = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
            bar = None
            if callable(use_tqdm):   # as vLLM 0.32 (common/offline.py): over the requests added, then the run's bar
                prompts = list(use_tqdm(prompts, desc="Adding requests"))
                bar = use_tqdm(total=len(prompts), desc="Processed prompts", dynamic_ncols=True, postfix="")
            outs, total = [], 0
            for p, sp in zip(prompts, sps):
                ids, fr, sr = outputs_for(p["prompt_token_ids"], sp)
                outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=tuple(ids), finish_reason=fr,
                                                                     stop_reason=sr, text="(vllm text)")]))
                if bar is not None:
                    total += len(ids)
                    bar.postfix = f"est. speed input: 0.00 toks/s, output: {total / bar.format_dict['elapsed']:.2f} toks/s"
                    bar.update(1)
            if bar is not None:
                bar.close()
            return outs

    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    mod.SamplingParams, mod.LLM, mod.inputs = SamplingParams, LLM, inputs
    return mod, inputs, rec


@pytest.fixture(autouse=True)
def gpu_engine(monkeypatch):
    """The fake stands for a GPU engine: no CPU memory check (it reads this machine's free RAM)."""
    from harness.evaluation.generation import vllm_backend

    monkeypatch.setattr(vllm_backend, "_on_cpu", lambda: False)


@pytest.fixture
def fake_vllm(monkeypatch):
    def install(outputs_for):
        mod, inputs, rec = make_fake_vllm(outputs_for)
        monkeypatch.setitem(sys.modules, "vllm", mod)
        monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
        return rec
    return install


def _backend(**kw):
    from harness.evaluation.generation.vllm_backend import VLLMBackend

    return VLLMBackend("/models/x", **kw)


def test_llm_construction_and_sampling_params(fake_vllm):
    rec = fake_vllm(lambda p, sp: ([3, 4], "length", None))
    b = _backend(dtype="float32", tensor_parallel_size=8, max_model_len=32768)
    kw = rec.llm_kwargs
    assert kw["model"] == "/models/x" and kw["dtype"] == "float32" and kw["tensor_parallel_size"] == 8
    assert kw["enable_prefix_caching"] is True and kw["max_model_len"] == 32768
    gp = GenParams(max_new_tokens=5, temperature=0.6, top_p=0.95, stop=("</think>",), stop_token_ids=(1, 2),
                   min_tokens=3, seed=9)
    out = b.generate([[1, 2, 3], [4]], gp)
    prompts, sps, use_tqdm = rec.calls[0]
    assert prompts == [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4]}]
    assert isinstance(sps, list) and len(sps) == 2 and callable(use_tqdm)    # the live token counter, no bar
    assert sps[0].kw == dict(n=1, temperature=0.6, top_p=0.95, top_k=-1, min_p=0.0, presence_penalty=0.0,
                             repetition_penalty=1.0, max_tokens=5, min_tokens=3, stop=["</think>"],
                             stop_token_ids=[1, 2], seed=9, skip_special_tokens=False,
                             spaces_between_special_tokens=False, include_stop_str_in_output=False)
    assert [o.token_ids for o in out] == [[3, 4], [3, 4]] and out[0].text == "ab"
    assert b.tokens_generated == 4                     # counted live through the use_tqdm hook
    assert b.version() == "vllm 0.0-fake"
    # greedy with no stops: vLLM gets None, not empty lists
    b.generate([[1]], GenParams(max_new_tokens=2))
    sp = rec.calls[-1][1][0].kw
    assert sp["temperature"] == 0.0 and sp["stop"] is None and sp["stop_token_ids"] is None and sp["seed"] is None


def test_per_prompt_params_and_zero_budget(fake_vllm):
    rec = fake_vllm(lambda p, sp: ([3] * sp.kw["max_tokens"], "length", None))
    b = _backend()
    out = b.generate([[1], [1], [1]], [GenParams(max_new_tokens=2), GenParams(max_new_tokens=0),
                                       GenParams(max_new_tokens=4)])
    assert [len(o.token_ids) for o in out] == [2, 0, 4]
    assert out[1].finish_reason == "length"
    assert len(rec.calls[0][0]) == 2  # the zero-budget request never reaches vLLM (max_tokens >= 1 there)


@pytest.mark.parametrize("vllm_out, expect", [
    # stop token id: vLLM keeps it in token_ids (only the text drops it)
    (([3, 4, STOP], "stop", STOP), ([3, 4], "ab", "stop", STOP)),
    # EOS: stop_reason None, the EOS token is in token_ids
    (([3, 4, EOS], "stop", None), ([3, 4], "ab", "stop", EOS)),
    # stop string "<|": the text is truncated, token_ids are not; it began inside token 11 ("c<")
    (([10, 11, 12], "stop", "<|"), ([10], "ab", "stop", "<|")),
    # V1 checks the length cap before stop tokens: a stop token as the last allowed token says "length"
    (([3, STOP], "length", None), ([3], "a", "stop", STOP)),
    (([3, EOS], "length", None), ([3], "a", "stop", EOS)),
    # an ordinary length finish is left alone
    (([3, 4, 5], "length", None), ([3, 4, 5], "abc", "length", None)),
])
def test_output_normalisation(fake_vllm, vllm_out, expect):
    fake_vllm(lambda p, sp: vllm_out)
    b = _backend()
    (c,) = b.generate([[1]], GenParams(max_new_tokens=3, stop=("<|",), stop_token_ids=(STOP,)))
    assert (c.token_ids, c.text, c.finish_reason, c.stop_reason) == expect
    assert c.meta["vllm_finish_reason"] == vllm_out[1]
    if vllm_out[2] == "<|":
        assert c.meta.get("stop_inside_token") is True


def test_budget_forcing_through_the_adapter(fake_vllm):
    """The shared budget layer drives the adapter: thinking stops on a stop id kept in vLLM's token_ids."""
    from harness.evaluation.generation.budget import BudgetConfig, generate_with_budget
    from harness.evaluation.generation.prompts import Delimiters

    class Tok(CharTokenizer):
        def encode(self, text, add_special_tokens=False):
            table = {"<|im_start|>think": [1, 3], "<|im_start|>answer": [1, 4], "\n<|im_start|>answer\nFinal Answer:":
                     [13, 1, 4, 13, 5], "<|im_start|>answer\nFinal Answer:": [1, 4, 13, 5], "Wait": [6],
                     "<|im_start|>": [1], "<|im_end|>": [2]}
            return table[text]

    def play(prompt, sp):
        if prompt[-2:] == [1, 4]:  # answer phase
            return [5, 5, EOS], "stop", None
        return [3, 3, 1], "stop", 1  # thinking stops on <|im_start|> (token id 1), kept by vLLM

    fake_vllm(play)
    b = _backend(tokenizer=Tok())
    (r,) = generate_with_budget(b, Tok(), [[9, 1, 3]], BudgetConfig(thinking_budget=20, num_wait=1),
                                Delimiters())
    assert r.thinking_tokens == 2 + 1 + 2 and r.num_waits_used == 1
    assert r.text == "aa daa<|im_start|>bcc" and r.answer_tokens == 2


def test_missing_vllm_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(UserError, match="pip install"):
        _backend()


def test_make_backend_kinds(monkeypatch, tmp_path, fake_vllm):
    import harness.evaluation.generation as gen

    with pytest.raises(UserError, match="unknown backend"):
        gen.resolve_backend_kind("tpu")
    monkeypatch.setattr(gen, "vllm_available", lambda: True)
    import torch

    for gpu in (False, True):     # vLLM wherever it is installed: measured faster on a CPU too (docs/performance.md)
        monkeypatch.setattr(torch.cuda, "is_available", lambda gpu=gpu: gpu)
        assert gen.resolve_backend_kind("auto") == "vllm"
    monkeypatch.setattr(gen, "vllm_available", lambda: False)
    assert gen.resolve_backend_kind("auto") == "hf"
    rec = fake_vllm(lambda p, sp: ([3], "length", None))
    (tmp_path / "config.json").write_text("{}")
    b = gen.make_backend("vllm", str(tmp_path), tensor_parallel_size=2, dtype="bfloat16")
    assert b.name == "vllm" and rec.llm_kwargs["model"] == str(tmp_path.resolve())
    assert rec.llm_kwargs["tensor_parallel_size"] == 2 and rec.llm_kwargs["dtype"] == "bfloat16"


def test_a_dead_engine_is_one_line_pointing_at_its_log(fake_vllm):
    """vLLM's CPU build refuses some head sizes inside its engine process (EngineDeadError, cause in its log)."""
    from harness.core.errors import UserError

    class EngineDeadError(Exception):
        pass

    def dead(p, sp):
        raise EngineDeadError("EngineCore encountered an issue. See stack trace (above) for the root cause.")

    fake_vllm(dead)
    with pytest.raises(UserError, match=r"vLLM's engine stopped .* --backend hf"):
        _backend().generate([[1, 2]], GenParams(max_new_tokens=2))
    fake_vllm(lambda p, sp: (_ for _ in ()).throw(ValueError("other")))
    with pytest.raises(ValueError):                          # other errors are not relabelled
        _backend().generate([[1, 2]], GenParams(max_new_tokens=2))
