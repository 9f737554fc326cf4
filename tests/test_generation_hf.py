from __future__ import annotations

import pytest

from harness.evaluation.generation.base import GenParams, cut_at_stop_string, decode
from harness.evaluation.generation.hf import HFBackend
from harness.evaluation.generation.prompts import S1, THINK_TAGS, build_prompt_ids, delimiter_ids

QUESTIONS = [
    "What is 2+3?",
    "What is the capital of France? Answer with one word.",
    "Name a color.",
]


def _prompts(tok):
    # no think prefix: plain chat prompts, so the model writes ordinary text
    return [build_prompt_ids(tok, q, delimiters=S1)[:-2] for q in QUESTIONS]


# ------------------------------------------------------------------------------ prompts


def test_build_prompt_ids(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = build_prompt_ids(tok, "What is 1+1?")
    text = decode(tok, ids)
    assert text.endswith("<|im_start|>assistant\n<|im_start|>think")
    assert "<|im_start|>user\nWhat is 1+1?<|im_end|>" in text
    assert "You are a helpful AI assistant named SmolLM" in text  # the template's default system prompt
    sys_ids = build_prompt_ids(tok, "What is 1+1?", system="Be brief.")
    assert "<|im_start|>system\nBe brief.<|im_end|>" in decode(tok, sys_ids)
    d = delimiter_ids(tok, S1)
    assert d.thinking_stop_ids == [1, 2] and d.thinking_stop_strings == []
    assert d.answer_stop_ids == [2]
    assert decode(tok, d.final_answer_close) == "\n<|im_start|>answer\nFinal Answer:"
    # "</think>" is not one token here, so the think-tags preset falls back to a stop string
    t = delimiter_ids(tok, THINK_TAGS)
    assert t.thinking_stop_strings == ["</think>"] and t.answer_stop_ids == [tok.eos_token_id]


def test_cut_at_stop_string(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok.encode("The answer is 42. Done", add_special_tokens=False)
    kept, text, inside = cut_at_stop_string(tok, ids, ". Done")
    assert text == "The answer is 42" and decode(tok, kept) == text and not inside
    kept, text, inside = cut_at_stop_string(tok, ids, "nswer")  # starts inside the token " answer"
    assert text == "The" and inside
    assert cut_at_stop_string(tok, ids, "zebra") is None


# ------------------------------------------------------------------------------ tiny random model (fast)


def test_left_padding_tiny(tiny_model):
    model, tok = tiny_model
    b = HFBackend(model, tok, batch_size=8)
    prompts = [[1, 4093, 198, 1780, 314, 216, 34, 27, 35], [1, 520], [1, 9690, 198, 2683, 359]]
    gp = GenParams(max_new_tokens=8)
    batched = b.generate(prompts, gp)
    for p, out in zip(prompts, batched):
        alone = b.generate([p], gp)[0]
        assert out.token_ids == alone.token_ids
        assert len(out.token_ids) == 8 and out.finish_reason == "length"  # random model, no EOS masking


def test_per_prompt_params_and_zero(tiny_model):
    model, tok = tiny_model
    b = HFBackend(model, tok, batch_size=4)
    p = [1, 4093, 198, 1780]
    outs = b.generate([p, p, p], [GenParams(max_new_tokens=3), GenParams(max_new_tokens=0),
                                  GenParams(max_new_tokens=6)])
    assert [len(o.token_ids) for o in outs] == [3, 0, 6]
    assert outs[1].finish_reason == "length" and outs[1].text == ""
    assert outs[2].token_ids[:3] == outs[0].token_ids  # greedy: a prefix of the longer row


def test_seeded_sampling_independent_of_batch(tiny_model):
    model, tok = tiny_model
    b = HFBackend(model, tok, batch_size=4)
    p, q = [1, 4093, 198, 1780], [1, 520, 9690, 198, 2683, 359]
    gp = GenParams(max_new_tokens=6, temperature=1.0, seed=123)
    both = b.generate([p, q], gp)
    alone = b.generate([p], gp)[0]
    assert both[0].token_ids == alone.token_ids
    other = b.generate([p], GenParams(max_new_tokens=6, temperature=1.0, seed=124))[0]
    assert other.token_ids != alone.token_ids  # 49k-token vocabulary, random weights: differs


# ------------------------------------------------------------------------------ the real model


@pytest.mark.slow
def test_batched_greedy_equals_unbatched(smollm2):
    model, tok = smollm2
    b = HFBackend(model, tok, batch_size=8)
    prompts = _prompts(tok)
    gp = GenParams(max_new_tokens=10)
    batched = b.generate(prompts, gp)
    for p, out in zip(prompts, batched):
        alone = b.generate([p], gp)[0]
        assert out.token_ids == alone.token_ids
        assert out.text == decode(tok, out.token_ids)


@pytest.mark.slow
def test_stop_token_and_string_cut_exactly(smollm2):
    model, tok = smollm2
    b = HFBackend(model, tok, batch_size=4, eos_ids=[])  # no EOS: see the raw greedy continuation
    p = _prompts(tok)[0]
    ref = b.generate([p], GenParams(max_new_tokens=12))[0].token_ids
    assert len(ref) == 12
    # stop token: the first occurrence of ref[k] ends the row, the token itself excluded and unbilled
    k = next(i for i in range(3, 12) if ref[i] not in ref[:i])
    out = b.generate([p], GenParams(max_new_tokens=12, stop_token_ids=(ref[k],)))[0]
    assert out.token_ids == ref[:k] and out.finish_reason == "stop" and out.stop_reason == ref[k]
    # stop string = the text of a later token: cut before it, from ids and text
    j = next(i for i in range(3, 12) if decode(tok, [ref[i]]).strip()
             and decode(tok, [ref[i]]) not in decode(tok, ref[:i]))
    s = decode(tok, [ref[j]])
    out = b.generate([p], GenParams(max_new_tokens=12, stop=(s,)))[0]
    assert out.token_ids == ref[:j] and out.text == decode(tok, ref[:j])
    assert out.finish_reason == "stop" and out.stop_reason == s
    # a stop token as the last allowed token is a stop, not a length
    out = b.generate([p], GenParams(max_new_tokens=k + 1, stop_token_ids=(ref[k],)))[0]
    assert out.finish_reason == "stop" and len(out.token_ids) == k
    # batched rows with different stops stop independently
    outs = b.generate([p, p], [GenParams(max_new_tokens=12, stop_token_ids=(ref[k],)), GenParams(max_new_tokens=12)])
    assert outs[0].token_ids == ref[:k] and outs[1].token_ids == ref


@pytest.mark.slow
def test_eos_and_min_tokens(smollm2):
    model, tok = smollm2
    b = HFBackend(model, tok, batch_size=4)
    p = _prompts(tok)[1]  # the capital of France: the model answers in a few tokens, then <|im_end|>
    out = b.generate([p], GenParams(max_new_tokens=20))[0]
    assert out.finish_reason == "stop" and out.stop_reason == tok.eos_token_id
    assert tok.eos_token_id not in out.token_ids
    n = len(out.token_ids)
    forced = b.generate([p], GenParams(max_new_tokens=n + 6, min_tokens=n + 3))[0]
    assert len(forced.token_ids) >= n + 3
    assert forced.token_ids[:n] == out.token_ids
    assert not set(forced.token_ids[: n + 3]) & {1, 2}


def test_batched_choice_equals_per_row_choice(tiny_model):
    """One masked argmax for the greedy rows (stop ids masked only for rows under min_tokens) picks
    what each row's own choose() picks; sampling rows keep their own generators."""
    import torch

    from harness.evaluation.generation.hf import _choose_all, _Row

    model, tok = tiny_model
    be = HFBackend(model, tok, batch_size=8)
    stop = be.eos_ids[0]
    params = [GenParams(max_new_tokens=9), GenParams(max_new_tokens=9, min_tokens=5),
              GenParams(max_new_tokens=9, min_tokens=5, stop_token_ids=(7,)),
              GenParams(max_new_tokens=9, temperature=0.8, seed=3), GenParams(max_new_tokens=9, min_tokens=1)]
    logits = torch.randn(len(params), len(tok), generator=torch.Generator().manual_seed(0))
    logits[:, stop] = 50.0          # the stop token would win everywhere it is not masked
    logits[2, 7] = 60.0
    rows_a = [_Row(be, gp) for gp in params]
    rows_b = [_Row(be, gp) for gp in params]
    rows_a[4].ids = rows_b[4].ids = [1]          # already past its min_tokens
    got = _choose_all(rows_a, list(range(len(params))), logits)
    want = [r.choose(logits[i]) for i, r in enumerate(rows_b)]
    assert got == want
    assert got[0] == stop and got[4] == stop and got[1] != stop and got[2] not in (stop, 7)
