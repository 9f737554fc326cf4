"""Chat-form training data: loss masks from real chat templates (tests/data/chat_templates/README.md
says where each template came from), the TRL formats, auto detection and bad input."""

import copy
import json
from pathlib import Path

import pytest

from harness.core.errors import UserError
from harness.training.config import load_recipe
from harness.training.data import prepare

TEMPLATES = Path(__file__).parent / "data" / "chat_templates"
# The end-of-turn token each template writes after an assistant turn (it carries loss; the
# template's newline after it does not).
END_OF_TURN = {"qwen2_5": "<|im_end|>", "qwen3": "<|im_end|>", "llama3": "<|eot_id|>", "llama3_1": "<|eot_id|>"}
SYSTEM, Q1, A1, Q2, A2 = "Be brief.", "What is 2+2?", "It is 4.", "And 3+3?", "The answer is 6."


def with_template(tok, name):
    t = copy.deepcopy(tok)
    t.chat_template = (TEMPLATES / f"{name}.jinja").read_text()
    return t


def _cfg(tmp_path, rows, **kw):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_recipe(None, [f"dataset={path}", "block_size=512", *[f"{k}={v}" for k, v in kw.items()]])


def _masked_runs(tok, ex) -> list[str]:
    """The text of each maximal run of loss tokens."""
    runs, cur = [], []
    for i, m in zip(ex.input_ids, ex.loss_mask):
        if m:
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur)), cur.clear()
    if cur:
        runs.append(tok.decode(cur))
    return runs


def _one(tok, tmp_path, row, **kw):
    return prepare([row], tok, _cfg(tmp_path, [row], **kw)).examples[0]


@pytest.mark.parametrize("name", ["qwen2_5", "llama3", "llama3_1"])
def test_mask_is_exactly_the_assistant_turns(smollm2_tokenizer, tmp_path, name):
    tok = with_template(smollm2_tokenizer, name)
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": Q1}, {"role": "assistant", "content": A1},
            {"role": "user", "content": Q2}, {"role": "assistant", "content": A2}]
    ex = _one(tok, tmp_path, {"messages": msgs})
    eot = END_OF_TURN[name]
    assert _masked_runs(tok, ex) == [A1 + eot, A2 + eot]
    unmasked = tok.decode([i for i, m in zip(ex.input_ids, ex.loss_mask) if not m])
    assert SYSTEM in unmasked and Q1 in unmasked and Q2 in unmasked
    # The ids are the template's own text, and the prompt part is what generation would see.
    assert tok.decode(ex.input_ids) == tok.apply_chat_template(msgs, tokenize=False)
    prompt = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    assert ex.input_ids[: ex.loss_mask.index(True)] == tok(prompt, add_special_tokens=False)["input_ids"]


def test_qwen3_thinking_turn(smollm2_tokenizer, tmp_path):
    tok = with_template(smollm2_tokenizer, "qwen3")
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": Q1},
            {"role": "assistant", "content": "<think>\n2 and 2 make 4.\n</think>\n\n" + A1}]
    ex = _one(tok, tmp_path, {"messages": msgs})
    # The think block is what the model writes after the generation prompt: it carries loss.
    assert _masked_runs(tok, ex) == ["<think>\n2 and 2 make 4.\n</think>\n\n" + A1 + "<|im_end|>"]
    # Qwen3 drops an earlier turn's thinking once a later user turn follows: refused, not mis-masked.
    longer = msgs + [{"role": "user", "content": Q2}, {"role": "assistant", "content": A2}]
    with pytest.raises(UserError, match="renders assistant turn 2 differently"):
        _one(tok, tmp_path, {"messages": longer})


def test_generation_markers_are_not_needed(smollm2_tokenizer):
    """Why prefix diffing: the shipped templates have no {% generation %}, so transformers' own
    assistant mask is empty; TRL's patched Qwen2.5 template has them, and its mask holds the same
    assistant text (plus the newlines the template puts inside the markers)."""
    msgs = [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}]
    for name in ("qwen2_5", "qwen3", "llama3"):
        out = with_template(smollm2_tokenizer, name).apply_chat_template(
            msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        assert sum(out["assistant_masks"]) == 0
    tok = with_template(smollm2_tokenizer, "qwen2_5_training")
    out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = tok.decode([i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m])
    assert marked.strip("\n") == A1 + "<|im_end|>"


@pytest.mark.parametrize("name", ["qwen2_5", "llama3"])
def test_conversational_prompt_completion(smollm2_tokenizer, tmp_path, name):
    tok = with_template(smollm2_tokenizer, name)
    prompt = [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}, {"role": "user", "content": Q2}]
    ex = _one(tok, tmp_path, {"prompt": prompt, "completion": [{"role": "assistant", "content": A2}]})
    assert _masked_runs(tok, ex) == [A2 + END_OF_TURN[name]]     # the prompt's assistant turn: no loss


def test_standard_prompt_completion_is_plain_text_plus_eos(smollm2_tokenizer, tmp_path):
    ex = _one(smollm2_tokenizer, tmp_path, {"prompt": "The sky is", "completion": " blue."})
    assert smollm2_tokenizer.decode(ex.input_ids) == "The sky is blue." + smollm2_tokenizer.eos_token
    assert _masked_runs(smollm2_tokenizer, ex) == [" blue." + smollm2_tokenizer.eos_token]


def test_format_is_chosen_from_the_columns(smollm2_tokenizer, tmp_path):
    from harness.training.chat_data import resolve_format

    def fmt(row, **kw):
        return resolve_format([row], _cfg(tmp_path, [row], **kw))

    assert fmt({"messages": []}) == "messages"
    assert fmt({"prompt": "a", "completion": "b"}) == "prompt_completion"
    assert fmt({"question": "q", "deepseek_thinking_trajectory": "t", "deepseek_attempt": "a"}) == "s1"
    assert fmt({"prompt": "a", "completion": "b"}, data_format="s1") == "s1"
    with pytest.raises(UserError, match="no column.*of any data format"):
        fmt({"text": "a"})


@pytest.mark.parametrize("row,message", [
    ({"prompt": "a", "completion": [{"role": "assistant", "content": "b"}]}, "both be strings or both be lists"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant message"),
    ({"messages": [{"role": "user"}]}, "non-empty list of"),
])
def test_malformed_rows(smollm2_tokenizer, tmp_path, row, message):
    with pytest.raises(UserError, match=message):
        _one(smollm2_tokenizer, tmp_path, row)


def test_template_without_assistant_text_is_refused(smollm2_tokenizer, tmp_path):
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = "{% for m in messages %}{% if m.role != 'assistant' %}{{ m.content }}\n{% endif %}{% endfor %}"
    with pytest.raises(UserError, match="renders no assistant text"):
        _one(tok, tmp_path, {"messages": [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}]})


@pytest.mark.parametrize("generation_prompt,message", [("", "drops part of assistant turn 1"),
                                                       ("<think>\n", "generation prompt is not how it renders")])
def test_template_that_drops_reasoning_is_refused(smollm2_tokenizer, tmp_path, generation_prompt, message):
    """DeepSeek-R1-Distill's template renders an assistant turn without the text up to </think>, and its
    generation prompt ends in <think>\\n (this stand-in keeps those two lines of it): the reasoning would
    silently leave the training target."""
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = ("{% for m in messages %}{% if m.role == 'user' %}<|User|>{{ m.content }}{% else %}"
                         "{% set content = m.content %}{% if '</think>' in content %}"
                         "{% set content = content.split('</think>')[-1] %}{% endif %}"
                         "<|Assistant|>{{ content }}<|end|>{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|Assistant|>" + generation_prompt + "{% endif %}")
    msgs = [{"role": "user", "content": Q1}, {"role": "assistant", "content": "<think>\n2 and 2.\n</think>" + A1}]
    with pytest.raises(UserError, match=message):
        _one(tok, tmp_path, {"messages": msgs})


def test_recipe_chat_template_replaces_one_that_drops_reasoning(smollm2_tokenizer, tmp_path):
    """The fix the refusal above names: a training template (recipe key chat_template) that renders the
    whole turn; the reasoning and the answer then carry loss, the user text none."""
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = ("{% for m in messages %}{% if m.role == 'user' %}<|User|>{{ m.content }}{% else %}"
                         "{% set content = m.content %}{% if '</think>' in content %}"
                         "{% set content = content.split('</think>')[-1] %}{% endif %}"
                         "<|Assistant|>{{ content }}<|end|>{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|Assistant|>{% endif %}")
    keep = tmp_path / "r1_training.jinja"
    keep.write_text("{% for m in messages %}{% if m.role == 'user' %}<|User|>{{ m.content }}{% else %}"
                    "<|Assistant|>{{ m.content }}<|end|>{% endif %}{% endfor %}"
                    "{% if add_generation_prompt %}<|Assistant|>{% endif %}")
    msgs = [{"role": "user", "content": Q1}, {"role": "assistant", "content": "<think>\n2 and 2.\n</think>" + A1}]
    with pytest.raises(UserError, match="drops part of assistant turn 1"):
        _one(copy.deepcopy(tok), tmp_path, {"messages": msgs})
    ex = _one(tok, tmp_path, {"messages": msgs}, chat_template=str(keep))
    (run,) = _masked_runs(tok, ex)
    assert "2 and 2." in run and A1 in run and Q1 not in run
    assert tok.chat_template == keep.read_text()          # what the checkpoint's tokenizer will carry
    with pytest.raises(UserError, match="chat_template .*no such file"):
        _cfg(tmp_path, [{"messages": msgs}], chat_template=str(tmp_path / "nope.jinja"))
