"""Budget forcing (docs/method.md#budget-forcing) against a scripted fake backend, then on the real model."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from harness.core.errors import UserError
from harness.evaluation.generation.base import Completion, GenParams, decode, per_prompt_params
from harness.evaluation.generation.budget import BudgetConfig, generate_with_budget
from harness.evaluation.generation.prompts import S1, build_prompt_ids, delimiter_ids

IM_START, IM_END = 1, 2


@dataclass
class ScriptedBackend:
    """Plays predetermined token streams, applying GenParams as the Backend contract says.

    scripts[marker] = {"think": [stream for round 0, round 1, ...], "answer": stream}; a request is
    recognised by its marker token (the prompt's 2nd token); a prompt ending with the answer prefix
    or the final-answer close is the answer phase. A stop/EOS token before min_tokens is "masked":
    the fake skips it, as if the model had sampled its next script token instead.
    """

    tokenizer: object
    scripts: dict
    eos: tuple = (IM_END,)
    calls: list = field(default_factory=list)
    rounds: dict = field(default_factory=dict)
    name: str = "scripted"

    def version(self):
        return "scripted 0"

    def generate(self, prompts, params):
        plist = per_prompt_params(params, len(prompts))
        ids = delimiter_ids(self.tokenizer, S1)
        self.calls.append([(list(p), gp) for p, gp in zip(prompts, plist)])
        outs = []
        for p, gp in zip(prompts, plist):
            marker = p[1]
            answer = p[-len(ids.answer_prefix):] == ids.answer_prefix or \
                p[-len(ids.final_answer_close_no_newline):] == ids.final_answer_close_no_newline
            if answer:
                stream = self.scripts[marker]["answer"]
            else:
                r = self.rounds.get(marker, 0)
                self.rounds[marker] = r + 1
                stream = self.scripts[marker]["think"][r]
            outs.append(self._play(stream, gp))
        return outs

    def _play(self, stream, gp: GenParams):
        stops = set(gp.stop_token_ids) | set(self.eos)
        out = []
        for t in stream:
            if len(out) >= gp.max_new_tokens:
                break
            if t in stops:
                if len(out) < gp.min_tokens:
                    continue
                return Completion(out, decode(self.tokenizer, out), "stop", t)
            out.append(t)
        if len(out) >= gp.max_new_tokens:
            return Completion(out, decode(self.tokenizer, out), "length")
        return Completion(out, decode(self.tokenizer, out), "stop", self.eos[0])  # script ran out: EOS


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


@pytest.fixture(scope="module")
def X(tok):
    (x,) = tok.encode(" x", add_special_tokens=False)
    return x


@pytest.fixture(scope="module")
def ANS(tok):
    return tok.encode(" 42", add_special_tokens=False) + [IM_END]


def prompt(tok, marker):
    ids = delimiter_ids(tok, S1)
    return [IM_START, marker, 198] + ids.think_prefix


def run(tok, scripts, cfg, markers=None, **kw):
    backend = ScriptedBackend(tok, scripts)
    markers = markers or list(scripts)
    got = []
    res = generate_with_budget(backend, tok, [prompt(tok, m) for m in markers], cfg, S1,
                               on_result=lambda i, r: got.append(i), **kw)
    return res, backend, got


M1, M2 = 100, 101  # marker tokens (any ids)


def test_stop_at_once(tok, ANS):
    res, _, _ = run(tok, {M1: {"think": [[IM_START]], "answer": ANS}}, BudgetConfig(thinking_budget=10))
    r = res[0]
    assert r.thinking_tokens == 0 and not r.hit_cap and r.num_waits_used == 0
    assert r.close == "<|im_start|>answer" and r.text == "<|im_start|>answer 42"
    assert r.answer_text == " 42" and r.answer_tokens == len(ANS) - 1 and r.finish_reason == "stop"
    assert decode(tok, r.token_ids) == r.text


def test_never_stops_cap_exact_forced_close(tok, X, ANS):
    res, backend, _ = run(tok, {M1: {"think": [[X] * 1000], "answer": ANS}},
                          BudgetConfig(thinking_budget=10, num_wait=2))
    r = res[0]
    assert r.thinking_tokens == 10 and r.hit_cap and r.num_waits_used == 0
    assert r.token_ids[:10] == [X] * 10
    assert r.close == "\n<|im_start|>answer\nFinal Answer:"
    assert r.text == " x" * 10 + "\n<|im_start|>answer\nFinal Answer: 42"
    assert backend.calls[0][0][1].max_new_tokens == 10


def test_forced_close_after_newline_has_no_extra_newline(tok, ANS):
    nl = 198
    res, _, _ = run(tok, {M1: {"think": [[nl] * 50], "answer": ANS}}, BudgetConfig(thinking_budget=4))
    assert res[0].hit_cap and res[0].close == "<|im_start|>answer\nFinal Answer:"  # as s1 does


def test_stop_exactly_at_the_cap(tok, X, ANS):
    # cap-1 tokens then the stop: a natural end, the one remaining token cannot hold a Wait + 1
    res, _, _ = run(tok, {M1: {"think": [[X] * 9 + [IM_START]], "answer": ANS}},
                    BudgetConfig(thinking_budget=10, num_wait=1))
    r = res[0]
    assert r.thinking_tokens == 9 and not r.hit_cap and r.num_waits_used == 0
    assert r.close == "<|im_start|>answer" and r.meta["waits_skipped_no_budget"] == 1
    # cap tokens then the stop: the cap is reached first -> forced close
    res, _, _ = run(tok, {M1: {"think": [[X] * 10 + [IM_START]], "answer": ANS}}, BudgetConfig(thinking_budget=10))
    assert res[0].thinking_tokens == 10 and res[0].hit_cap and "Final Answer:" in res[0].close


def test_wait_count_and_exact_cap_across_rounds(tok, X, ANS):
    wait = tok.encode("Wait", add_special_tokens=False)
    seg = [X] * 2 + [IM_END]
    res, backend, _ = run(tok, {M1: {"think": [seg] * 4, "answer": ANS}},
                          BudgetConfig(thinking_budget=100, num_wait=3))
    r = res[0]
    assert r.num_waits_used == 3 and backend.rounds[M1] == 4
    assert r.thinking_tokens == 4 * 2 + 3 * len(wait)
    assert r.text.count("Wait") == 3 and not r.hit_cap
    assert r.text == " x xWait x xWait x xWait x x<|im_start|>answer 42"
    assert IM_END not in r.token_ids[: r.thinking_tokens]  # the stop tokens were dropped
    # remaining cap shrinks every round, never exceeded: 4 + W(1) -> 7 left; 4 + W -> 2 left; cap
    res, backend, _ = run(tok, {M1: {"think": [[X] * 4 + [IM_END]] * 6, "answer": ANS}},
                          BudgetConfig(thinking_budget=12, num_wait=5))
    r = res[0]
    assert [c[0][1].max_new_tokens for c in backend.calls[:3]] == [12, 7, 2]
    assert r.thinking_tokens == 12 and r.hit_cap and r.num_waits_used == 2


def test_min_thinking_tokens(tok, X, ANS):
    script = {M1: {"think": [[IM_START, X, X, IM_START, X, X, X, X, IM_START, X]], "answer": ANS}}
    res, backend, _ = run(tok, script, BudgetConfig(thinking_budget=50, min_thinking_tokens=5))
    assert res[0].thinking_tokens == 6 and not res[0].hit_cap
    assert backend.calls[0][0][1].min_tokens == 5
    res, _, _ = run(tok, script, BudgetConfig(thinking_budget=50))
    assert res[0].thinking_tokens == 0
    # counted over the whole thinking: once reached, later rounds may stop at once
    script = {M1: {"think": [[IM_END, X, X, X, X, X, IM_END], [IM_END]], "answer": ANS}}
    res, backend, _ = run(tok, script, BudgetConfig(thinking_budget=50, num_wait=1, min_thinking_tokens=5))
    assert [c[0][1].min_tokens for c in backend.calls[:2]] == [5, 0]
    assert res[0].thinking_tokens == 6 and res[0].num_waits_used == 1


def test_thinking_tokens_are_counted_from_ids(tok, ANS):
    chars = [tok.encode(c, add_special_tokens=False)[0] for c in "hello"]
    assert len(tok.encode("hello", add_special_tokens=False)) == 1  # re-tokenizing would say 1
    res, _, _ = run(tok, {M1: {"think": [chars + [IM_START]], "answer": ANS}}, BudgetConfig(thinking_budget=20))
    assert res[0].thinking_tokens == 5 and res[0].thinking_text == "hello"


def test_s1_compat_exceeds_cap_with_barrier(tok, X, ANS):
    seg = [X] * 8 + [IM_START]
    scripts = {M1: {"think": [seg] * 3, "answer": ANS},        # stops every round
               M2: {"think": [[X] * 50], "answer": ANS}}       # hits the cap in round 0
    cfg = BudgetConfig(thinking_budget=10, num_wait=2, mode="s1-compat")
    res, backend, order = run(tok, scripts, cfg)
    a, b = res
    assert a.thinking_tokens == 3 * 8 + 2 > 10 and a.num_waits_used == 2  # s1: the cap is per round
    assert a.meta["s1_cut_tokens"] == 16 and not a.hit_cap
    assert a.token_ids[:10] == ([X] * 8 + tok.encode("Wait", add_special_tokens=False) + [X])[:10]
    assert a.token_ids[10:12] == tok.encode("<|im_start|>answer", add_special_tokens=False)
    assert a.text.count("Wait") == 2  # the logged text keeps all the thinking
    assert b.thinking_tokens == 10 and b.hit_cap
    # every thinking round asks for the full cap; min_tokens = 1 with Waits (as s1)
    assert all(gp.max_new_tokens == 10 and gp.min_tokens == 1 for call in backend.calls[:-1] for _, gp in call)
    # barrier: rounds 1-2 hold only A; the answer phase holds both, after all thinking
    assert [len(c) for c in backend.calls] == [2, 1, 1, 2]
    assert order == [0, 1]


def test_independent_mode_does_not_wait(tok, X, ANS):
    seg = [X] * 3 + [IM_START]
    scripts = {M1: {"think": [seg] * 3, "answer": ANS}, M2: {"think": [[X] * 60], "answer": ANS}}
    res, backend, order = run(tok, scripts, BudgetConfig(thinking_budget=50, num_wait=2))
    # B hits the cap in round 0; round 1 already holds B's answer next to A's thinking continuation
    assert [len(c) for c in backend.calls] == [2, 2, 1, 1]
    assert order == [1, 0]  # B completes first
    assert res[1].hit_cap and res[1].thinking_tokens == 50 and res[1].num_waits_used == 0
    assert res[0].num_waits_used == 2 and res[0].thinking_tokens == 9 + 2 and not res[0].hit_cap


def test_auto_cap_and_answer_budget(tok, X):
    ids = delimiter_ids(tok, S1)
    p = prompt(tok, M1)
    cfg = BudgetConfig(thinking_budget="auto", total_budget=200, max_answer_tokens=3)
    res, backend, _ = run(tok, {M1: {"think": [[X] * 500], "answer": [X] * 10}}, cfg)
    cap = 200 - len(p) - len(ids.final_answer_close_no_newline) - 100
    assert res[0].thinking_cap == cap and res[0].thinking_tokens == cap
    assert res[0].answer_tokens == 3 and res[0].finish_reason == "length"
    cfg = BudgetConfig(thinking_budget="auto", total_budget=200, longest_prompt=50)
    res, _, _ = run(tok, {M1: {"think": [[IM_END]], "answer": [X, IM_END]}}, cfg)
    assert res[0].thinking_cap == 200 - 50 - len(ids.final_answer_close_no_newline) - 100
    with pytest.raises(UserError, match=r"thinking budget 'auto' = 50 - longest prompt 5 - 6 - 100 = -61 < 1; fix: raise the total budget$"):
        run(tok, {M1: {"think": [[IM_END]], "answer": [IM_END]}}, BudgetConfig(total_budget=50))
    with pytest.raises(UserError, match="^thinking budget must be a positive token count, 'auto' or none, not 0$"):
        BudgetConfig(thinking_budget=0)


def test_explicit_cap_larger_than_the_context(tok, X):
    res, backend, _ = run(tok, {M1: {"think": [[X] * 500], "answer": [X, IM_END]}},
                          BudgetConfig(thinking_budget=1000, total_budget=30))
    r = res[0]
    assert backend.calls[0][0][1].max_new_tokens == 30 - 5 and r.thinking_tokens == 25 and r.hit_cap
    assert r.answer_tokens == 0 and r.finish_reason == "length" and r.meta["no_room_for_answer"]


def test_seeds_per_request_and_round(tok, X, ANS):
    seg = [X, IM_END]
    res, backend, _ = run(tok, {M1: {"think": [seg] * 2, "answer": ANS}, M2: {"think": [seg] * 2, "answer": ANS}},
                          BudgetConfig(thinking_budget=20, num_wait=1), temperature=0.7, seed=[11, 22])
    seeds = [gp.seed for call in backend.calls for _, gp in call]
    assert len(set(seeds)) == len(seeds)  # a distinct stream per request and round
    assert all(gp.temperature == 0.7 for call in backend.calls for _, gp in call)


# ------------------------------------------------------------------------------ the real model


@pytest.mark.slow
def test_budget_forcing_on_smollm2(smollm2):
    from harness.evaluation.generation.hf import HFBackend

    model, tok = smollm2
    backend = HFBackend(model, tok, batch_size=4)
    prompts = [build_prompt_ids(tok, q) for q in ("What is 2+3?", "Name a color.")]
    got = []
    cfg = BudgetConfig(thinking_budget=12, num_wait=2, max_answer_tokens=6)
    res = generate_with_budget(backend, tok, prompts, cfg, S1, on_result=lambda i, r: got.append(i))
    assert sorted(got) == [0, 1]
    wait = tok.encode("Wait", add_special_tokens=False)
    for r in res:
        assert r.thinking_tokens <= 12
        assert r.text.count("Wait") >= r.num_waits_used
        assert decode(tok, r.token_ids) == r.text
        assert r.token_ids[: r.thinking_tokens].count(wait[0]) >= r.num_waits_used
        assert r.answer_tokens <= 6
        if r.hit_cap:
            assert r.thinking_tokens == 12 and "<|im_start|>answer\nFinal Answer:" in r.text
    # this model ends its "thinking" after a couple of tokens, so Waits get injected
    assert sum(r.num_waits_used for r in res) >= 1
    # a tiny cap forces the close
    res = generate_with_budget(backend, tok, prompts, BudgetConfig(thinking_budget=3, num_wait=3,
                                                                    max_answer_tokens=4), S1)
    assert any(r.hit_cap for r in res)
    for r in res:
        assert r.thinking_tokens <= 3
        if r.hit_cap:
            assert r.thinking_tokens == 3 and "Final Answer:" in r.close


def test_plain_protocol_generates_the_whole_answer_without_thinking(tok):
    """`plain` (the paper's base-model row): the chat template alone (no think prefix), one answer
    phase up to the end of turn with no thinking cap, and the grader reads the whole response."""
    from harness.evaluation.generation.prompts import PLAIN, get_delimiters
    from harness.evaluation.grading import extract

    template = tok.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}], add_generation_prompt=True,
                                       tokenize=False)
    assert build_prompt_ids(tok, "What is 3 + 4?", get_delimiters("plain")) == tok.encode(template, add_special_tokens=False)
    answer = tok.encode("3 + 4 = 7", add_special_tokens=False)

    class OneShot:
        calls = []

        def generate(self, prompts, params):
            self.calls.append(per_prompt_params(params, len(prompts)))
            return [Completion(list(answer), decode(tok, answer), "stop", tok.eos_token_id) for _ in prompts]

    backend = OneShot()
    prompt = build_prompt_ids(tok, "What is 3 + 4?", PLAIN)
    (res,) = generate_with_budget(backend, tok, [prompt], BudgetConfig(thinking_budget="auto", total_budget=200), PLAIN)
    (gp,) = backend.calls[0]
    assert len(backend.calls) == 1 and gp.max_new_tokens == 200 - len(prompt)
    assert tok.eos_token_id in gp.stop_token_ids and not gp.min_tokens
    assert res.text == "3 + 4 = 7" and res.thinking_tokens == 0 and not res.hit_cap and res.close == ""
    assert extract("arith", res.text, answer_delimiter=PLAIN.answer_prefix.strip()) == "7"
    assert extract("arith", res.text) is None       # under s1's delimiter the same text has no answer section
