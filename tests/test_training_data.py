"""The training text: s1's "Answer: " rule, and sampled completions trained as what the policy generated."""

from types import SimpleNamespace

import pytest

from harness.core.errors import UserError
from harness.training.data import format_texts, prepare


def _cfg(**kw):
    base = dict(dataset="d.jsonl", question_column="question", thinking_column="thinking", answer_column="attempt",
                completion_column=None, forced_column=None, score_column=None, quality_percentiles=[],
                think_prefix="<|im_start|>think", answer_prefix="<|im_start|>answer", block_size=512,
                truncation="truncate")
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("attempt, shown", [("42", "Answer: 42"), ("Answer: 42", "Answer: 42"),
                                            ("The sum is 7.\nAnswer: 7", "The sum is 7.\nAnswer: 7")])
def test_answer_prefix_only_when_absent(smollm2_tokenizer, attempt, shown):
    """s1 (data/tokenization.py): answer = "Answer: " + attempt if "Answer:" not in attempt else attempt."""
    _, completion = format_texts(smollm2_tokenizer, "What is 3 + 4?", "3 plus 4", attempt,
                                 "<|im_start|>think", "<|im_start|>answer")
    assert completion.startswith("<|im_start|>think\n3 plus 4\n<|im_start|>answer\n" + shown + "<|im_end|>")
    assert completion.count("Answer:") == 1


def test_sampled_completion_trains_only_what_the_policy_generated(smollm2_tokenizer):
    tok = smollm2_tokenizer
    response = "er\nIt is 7.<|im_start|>answer\n3 + 4 = 7"
    close = response.index("<|im_start|>answer")
    rows = [{"question": "What is 3 + 4?", "response": response,
             "forced_spans": [[close, close + len("<|im_start|>answer")]]}]
    ex = prepare(rows, tok, _cfg(completion_column="response", forced_column="forced_spans")).examples[0]
    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}], tokenize=False,
                                     add_generation_prompt=True)
    # prompt + think prefix: no loss (the sampler put the prefix in the prompt)
    n_head = len(enc(prompt)) + len(enc("<|im_start|>think"))
    assert not any(ex.loss_mask[:n_head])
    pieces = [("er\nIt is 7.", True), ("<|im_start|>answer", False), ("\n3 + 4 = 7", True),
              (tok.eos_token, True), ("\n", False)]
    at = n_head
    for text, loss in pieces:
        ids = enc(text)
        assert ex.input_ids[at:at + len(ids)] == ids, text
        assert ex.loss_mask[at:at + len(ids)] == [loss] * len(ids), text
        at += len(ids)
    assert at == len(ex.input_ids)
    # without forced spans, the close is trained on (but the think prefix still is not)
    ex2 = prepare(rows, tok, _cfg(completion_column="response")).examples[0]
    assert not any(ex2.loss_mask[:n_head]) and sum(ex2.loss_mask) == sum(ex.loss_mask) + len(enc("<|im_start|>answer"))


def test_bad_forced_spans_name_the_row(smollm2_tokenizer):
    rows = [{"question": "q", "response": "abc", "forced_spans": [[2, 9]]}]
    with pytest.raises(UserError, match="forced spans"):
        prepare(rows, smollm2_tokenizer, _cfg(completion_column="response", forced_column="forced_spans"))


def test_curate_natural_close_and_forced_spans(tmp_path, monkeypatch):
    """--require-natural-close drops samples whose thinking hit the cap (forced "Final Answer:") or whose
    answer was cut; every kept row says which characters the sampler forced."""
    import json

    import harness.evaluation.runner as runner
    from harness.evaluation.benchmarks import load_benchmark
    from harness.paper.curate import curate

    probs = load_benchmark("arith_train", limit=3)
    rows = [dict(problem_id=probs[0].id, sample_index=0, correct=True, hit_cap=False, finish_reason="stop", num_waits=0,
                 response=f"er\nok<|im_start|>answer\n{probs[0].gold}"),
            dict(problem_id=probs[1].id, sample_index=0, correct=True, hit_cap=True, finish_reason="stop", num_waits=0,
                 response=f"er\nlong\n<|im_start|>answer\nFinal Answer: {probs[1].gold}"),
            dict(problem_id=probs[2].id, sample_index=0, correct=True, hit_cap=False, finish_reason="length", num_waits=0,
                 response=f"er<|im_start|>answer\n{probs[2].gold} and")]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(runner, "run_eval", lambda cfg: {"arith_train": {"run_dir": str(run_dir), "n": 3, "accuracy": 1.0}})
    s = curate("smollm2-135m", "arith", 1, tmp_path / "all.jsonl", limit=3)
    kept = [json.loads(l) for l in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert s["kept"] == 3 and {r["seed"] for r in kept} == {0}      # the run's seed: sets of several runs concatenate
    for r in kept:
        (a, b), = r["forced_spans"]
        assert r["response"][a:b] in ("<|im_start|>answer", "\n<|im_start|>answer\nFinal Answer:")
    s = curate("smollm2-135m", "arith", 1, tmp_path / "nat.jsonl", limit=3, require_natural_close=True)
    kept = [json.loads(l) for l in (tmp_path / "nat.jsonl").read_text().splitlines()]
    assert s["kept"] == 1 and s["dropped_not_natural"] == 2 and kept[0]["problem_id"] == probs[0].id
