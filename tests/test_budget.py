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


# ------------------------------------------------------------------------------ pinned by mutation testing
# (docs/testing.md#harnessevaluationgenerationbudgetpy): boundaries, exact arithmetic, what reaches the backend


@pytest.mark.parametrize("kw, caps", [
    (dict(thinking_budget=1), [1, 1]),                                          # a 1-token cap, as asked
    (dict(thinking_budget=None), [32768 - 5 - 6 - 100, 32768 - 9 - 6 - 100]),   # no cap: the context's room
    (dict(thinking_budget=None, max_answer_tokens=1), [32768 - 5 - 6 - 1, 32768 - 9 - 6 - 1]),  # room for 1
    (dict(thinking_budget=None, total_budget=1), [1, 1]),                       # nothing left: one token
    (dict(thinking_budget=3, num_wait=0, min_thinking_tokens=0), [3, 3]),
])
def test_budget_config_accepts_the_smallest_valid_values(tok, kw, caps):
    """The smallest value of each setting is accepted, kept as given, and used: the caps it yields."""
    cfg = BudgetConfig(**kw)
    assert {k: getattr(cfg, k) for k in kw} == kw
    assert cfg.resolve_caps([5, 9], delimiter_ids(tok, S1)) == caps


@pytest.mark.parametrize("kw, message", [
    (dict(thinking_budget=0), r"^thinking budget must be a positive token count, 'auto' or none, not 0$"),
    (dict(thinking_budget=True), r"^thinking budget must be a positive token count, 'auto' or none, not True$"),
    (dict(num_wait=-1), r"^num_wait and min_thinking_tokens must be >= 0$"),
    (dict(min_thinking_tokens=-1), r"^num_wait and min_thinking_tokens must be >= 0$"),
    (dict(max_answer_tokens=0), r"^max_answer_tokens must be >= 1$"),
    (dict(total_budget=0), r"^total_budget must be >= 1$"),
    (dict(mode="fast"), r"^budget mode must be 'independent' or 's1-compat', not 'fast'$"),
])
def test_budget_config_refuses_with_one_line(kw, message):
    with pytest.raises(UserError, match=message):
        BudgetConfig(**kw)


# close without its newline = 6 tokens for SmolLM2 ("<|im_start|>", "answer", "\n", "Final", " Answer", ":")
@pytest.mark.parametrize("kw, lengths, caps", [
    (dict(total_budget=200), [5, 9], [85, 85]),                       # 200 - longest 9 - 6 - 100
    (dict(total_budget=200, longest_prompt=50), [5], [44]),           # the benchmark's longest prompt wins
    (dict(total_budget=200, longest_prompt=3), [9], [85]),            # ... unless this call has a longer one
    (dict(total_budget=116), [9], [1]),                                # the smallest cap 'auto' accepts
    (dict(total_budget=200), [], []),                                  # no prompts, no caps
    (dict(thinking_budget=None, total_budget=200), [5, 9], [89, 85]),  # per prompt: 200 - n - 6 - 100
    (dict(thinking_budget=None, total_budget=200, max_answer_tokens=20), [5], [169]),  # 200 - 5 - 6 - 20
    (dict(thinking_budget=None, total_budget=50), [5], [1]),          # nothing left: one token, not <= 0
    (dict(thinking_budget=7), [5, 9], [7, 7]),
])
def test_resolve_caps(tok, kw, lengths, caps):
    ids = delimiter_ids(tok, S1)
    assert len(ids.final_answer_close_no_newline) == 6
    assert BudgetConfig(**kw).resolve_caps(lengths, ids) == caps


def test_auto_cap_one_below_the_smallest_is_refused(tok):
    with pytest.raises(UserError, match=r"= 115 - longest prompt 9 - 6 - 100 = 0 < 1; fix: raise the total budget$"):
        BudgetConfig(total_budget=115).resolve_caps([9], delimiter_ids(tok, S1))


def test_seeds_are_the_documented_streams(tok, X, ANS):
    # request i: seed + 1000003 * i; round k of a request: + 7919 * k, modulo 2**63 (fits a signed int64)
    scripts = {M1: {"think": [[X, IM_END]] * 2, "answer": ANS}, M2: {"think": [[X, IM_END]] * 2, "answer": ANS}}
    cfg = BudgetConfig(thinking_budget=20, num_wait=1)

    def seeds(seed):
        _, backend, _ = run(tok, scripts, cfg, temperature=0.7, seed=seed)
        return [[gp.seed for _, gp in call] for call in backend.calls]  # rounds: think, think after Wait, answer

    assert seeds(5) == [[5, 1000008], [7924, 1007927], [15843, 1015846]]
    assert seeds([11, None]) == [[11, None], [7930, None], [15849, None]]
    top = 2**63 - 1
    assert seeds(top) == [[top, 1000002], [7918, 1007921], [15837, 1015840]]
    assert seeds(None) == [[None, None]] * 3
    with pytest.raises(ValueError, match=r"^got 1 seeds for 2 prompts$"):
        seeds([1])


class Recording:
    """Ends every generation at once (no tokens, "stop") and records what it was asked."""

    def __init__(self, tok):
        self.tok, self.calls = tok, []

    def generate(self, prompts, params):
        self.calls.append(list(zip(prompts, per_prompt_params(params, len(prompts)))))
        return [Completion([], "", "stop", self.tok.eos_token_id) for _ in prompts]


def test_sampling_settings_and_stops_reach_both_phases(tok):
    from harness.evaluation.generation.prompts import Delimiters

    # "</think>" and "END!" are several tokens: they travel as stop strings, "<|im_end|>" as a stop id
    d = Delimiters(name="custom", think_prefix="<think>\n", answer_prefix="</think>\n\n",
                   thinking_stops=("</think>", "<|im_end|>"), end_of_turn="END!",
                   final_answer_close="\n</think>\n\nFinal Answer:")
    p = [IM_START, M1, 198] + tok.encode("<think>\n", add_special_tokens=False)
    answer_prefix = tok.encode("</think>\n\n", add_special_tokens=False)
    cfg = BudgetConfig(thinking_budget=10, total_budget=100)
    backend = Recording(tok)
    (r,) = generate_with_budget(backend, tok, [p], cfg, d)
    (think,), (answer,) = backend.calls
    assert think == (p, GenParams(max_new_tokens=10, temperature=0.0, top_p=1.0, stop=("</think>",),
                                  stop_token_ids=(IM_END,)))   # greedy by default, as s1
    assert answer == (p + answer_prefix, GenParams(max_new_tokens=100 - len(p) - len(answer_prefix),
                                                   stop=("END!",), seed=None))
    assert r.close == "</think>\n\n" and r.meta == {"thinking_rounds": 1, "mode": "independent"}

    backend, got = Recording(tok), []
    res = generate_with_budget(backend, tok, [p, p], cfg, d, temperature=0.6, top_p=0.9, seed=3,
                               sampling={"top_k": 20, "min_p": 0.05}, on_result=lambda i, r: got.append((i, r)))
    same = dict(temperature=0.6, top_p=0.9, top_k=20, min_p=0.05)
    assert [gp for _, gp in backend.calls[0]] == [
        GenParams(max_new_tokens=10, stop=("</think>",), stop_token_ids=(IM_END,), seed=s, **same) for s in (3, 1000006)]
    assert [gp for _, gp in backend.calls[1]] == [
        GenParams(max_new_tokens=100 - len(p) - len(answer_prefix), stop=("END!",), seed=s + 7919, **same)
        for s in (3, 1000006)]
    assert [r.index for r in res] == [0, 1] and got == [(0, res[0]), (1, res[1])]


def test_plain_protocol_passes_seed_sampling_and_reports(tok):
    from harness.evaluation.generation.prompts import PLAIN

    p = [IM_START, M1, 198]
    backend, got = Recording(tok), []
    (r,) = generate_with_budget(backend, tok, [p], BudgetConfig(total_budget=50), PLAIN, temperature=0.5, top_p=0.8,
                                seed=[9], sampling={"top_k": 5}, on_result=lambda i, r: got.append((i, r)))
    assert backend.calls == [[(p, GenParams(max_new_tokens=47, temperature=0.5, top_p=0.8,
                                            stop_token_ids=(tok.eos_token_id,), seed=9, top_k=5))]]
    assert got == [(0, r)] and r.index == 0 and r.thinking_cap == 0 and r.meta == {"thinking_rounds": 0, "mode": "independent"}
    generate_with_budget(backend, tok, [p, p], BudgetConfig(total_budget=50), PLAIN, seed=4)
    assert [gp.seed for _, gp in backend.calls[-1]] == [4, 1000007]


def test_independent_context_bounds(tok, X, ANS):
    # the prompt (5 tokens) fills the context: no thinking call at all, a forced close, no answer
    res, backend, _ = run(tok, {M1: {"think": [[X] * 50], "answer": ANS}}, BudgetConfig(thinking_budget=10, total_budget=5))
    r = res[0]
    assert backend.calls == []    # never an empty batch
    assert r.meta == {"context_full": True, "no_room_for_answer": True, "thinking_rounds": 0, "mode": "independent"}
    assert r.hit_cap is True and r.close == "\n<|im_start|>answer\nFinal Answer:" and r.thinking_tokens == 0
    # one token of context left: still generated
    res, backend, _ = run(tok, {M1: {"think": [[X] * 50], "answer": ANS}}, BudgetConfig(thinking_budget=10, total_budget=6))
    assert [c[0][1].max_new_tokens for c in backend.calls] == [1] and res[0].thinking_tokens == 1 and res[0].hit_cap
    # the context bound shrinks with the thinking so far: 30 - 5 = 25, then 25 - (3 + Wait) = 21
    res, backend, _ = run(tok, {M1: {"think": [[X] * 3 + [IM_END], [X] * 100], "answer": ANS}},
                          BudgetConfig(thinking_budget=1000, num_wait=1, total_budget=30))
    assert [c[0][1].max_new_tokens for c in backend.calls] == [25, 21] and res[0].thinking_tokens == 25
    # exactly one token of room for the answer: 5 + 2 thinking + 2 ("<|im_start|>answer") + 1 = 10
    res, backend, _ = run(tok, {M1: {"think": [[X] * 2 + [IM_END]], "answer": [X] * 5}},
                          BudgetConfig(thinking_budget=8, total_budget=10))
    assert backend.calls[-1][0][1].max_new_tokens == 1
    assert res[0].answer_tokens == 1 and res[0].finish_reason == "length" and "no_room_for_answer" not in res[0].meta


def test_independent_wait_needs_one_token_after_it(tok, X, ANS):
    # cap 10: 8 tokens + Wait leaves exactly 1 -> the Wait goes in, the next round gets that 1 token
    res, backend, _ = run(tok, {M1: {"think": [[X] * 8 + [IM_END], [X] * 5], "answer": ANS}},
                          BudgetConfig(thinking_budget=10, num_wait=1))
    r = res[0]
    assert [c[0][1].max_new_tokens for c in backend.calls[:2]] == [10, 1]
    assert r.num_waits_used == 1 and r.thinking_tokens == 10 and r.hit_cap is True
    assert r.meta == {"thinking_rounds": 2, "mode": "independent"}
    # 2 + Wait, then 6 more: 9 of 10 used, no room for Wait + 1; 2 of the 3 Waits are reported skipped
    res, _, _ = run(tok, {M1: {"think": [[X] * 2 + [IM_END], [X] * 6 + [IM_END]], "answer": ANS}},
                    BudgetConfig(thinking_budget=10, num_wait=3))
    r = res[0]
    assert r.num_waits_used == 1 and r.thinking_tokens == 9 and r.hit_cap is False
    assert r.meta == {"waits_skipped_no_budget": 2, "thinking_rounds": 2, "mode": "independent"}
    # an explicit cap past the context: the context decides the Wait too (5 + 24 + Wait = 30 leaves nothing after
    # it): a natural close, not a Wait and then a forced one (no room for an answer either way)
    res, backend, _ = run(tok, {M1: {"think": [[X] * 24 + [IM_END], [X] * 5], "answer": ANS}},
                          BudgetConfig(thinking_budget=1000, num_wait=1, total_budget=30))
    r = res[0]
    assert len(backend.calls) == 1 and r.num_waits_used == 0 and r.thinking_tokens == 24 and r.hit_cap is False
    assert r.meta == {"waits_skipped_no_budget": 1, "no_room_for_answer": True, "thinking_rounds": 1, "mode": "independent"}
    # no Waits asked: nothing reported skipped
    res, _, _ = run(tok, {M1: {"think": [[X, IM_END]], "answer": ANS}}, BudgetConfig(thinking_budget=10))
    assert res[0].meta == {"thinking_rounds": 1, "mode": "independent"} and res[0].hit_cap is False


def test_a_backend_breaking_the_contract_is_an_error(tok, X):
    class Short:
        def generate(self, prompts, params):
            return []

    class Overlong:
        def generate(self, prompts, params):
            return [Completion([X] * 12, "", "length") for _ in prompts]

    p = prompt(tok, M1)
    with pytest.raises(RuntimeError, match=r"^backend returned 0 completions for 1 prompts$"):
        generate_with_budget(Short(), tok, [p], BudgetConfig(thinking_budget=10), S1)
    with pytest.raises(RuntimeError, match=r"^backend returned 12 tokens, more than the 10 allowed$"):
        generate_with_budget(Overlong(), tok, [p], BudgetConfig(thinking_budget=10), S1)


@pytest.mark.parametrize("num_wait, min_tokens", [(0, 0), (1, 1), (2, 1)])
def test_s1_compat_min_tokens_only_with_waits(tok, X, ANS, num_wait, min_tokens):
    _, backend, _ = run(tok, {M1: {"think": [[X, IM_END]] * 3, "answer": ANS}},
                        BudgetConfig(thinking_budget=10, num_wait=num_wait, mode="s1-compat"))
    assert [c[0][1].min_tokens for c in backend.calls[:-1]] == [min_tokens] * (num_wait + 1)


def test_s1_compat_answers_and_bookkeeping(tok, X, ANS):
    # the capped request first: the other request's round still counts
    seg = [X] * 8 + [IM_START]
    scripts = {M2: {"think": [[X] * 50], "answer": ANS}, M1: {"think": [seg] * 3, "answer": ANS}}
    res, backend, _ = run(tok, scripts, BudgetConfig(thinking_budget=10, num_wait=2, mode="s1-compat"), markers=[M2, M1])
    b, a = res
    ids = delimiter_ids(tok, S1)
    assert a.thinking_tokens == 26 and a.num_waits_used == 2 and b.thinking_tokens == 10
    assert a.answer_text == b.answer_text == " 42" and a.finish_reason == b.finish_reason == "stop"
    assert a.meta == {"s1_cut_tokens": 16, "thinking_rounds": 3, "mode": "s1-compat"}
    assert b.meta == {"thinking_rounds": 1, "mode": "s1-compat"}      # exactly the cap: nothing cut
    # the answer is conditioned on the thinking cut to the cap
    answer_prompts = {p[1]: p for p, _ in backend.calls[-1]}
    assert answer_prompts[M1] == prompt(tok, M1) + a.token_ids[:10] + ids.answer_prefix
    # every request hits the cap in round 0: the Wait rounds end early, the answers still come
    res, backend, _ = run(tok, {M2: {"think": [[X] * 50], "answer": ANS}},
                          BudgetConfig(thinking_budget=10, num_wait=2, mode="s1-compat"))
    assert [len(c) for c in backend.calls] == [1, 1] and res[0].answer_text == " 42" and res[0].hit_cap


def test_s1_compat_context_bounds(tok, X, ANS):
    # round 1 gets what the context has left: 30 - 5 - (8 + Wait) = 16 < the cap 20
    res, backend, _ = run(tok, {M1: {"think": [[X] * 8 + [IM_START], [X] * 50], "answer": ANS}},
                          BudgetConfig(thinking_budget=20, num_wait=1, total_budget=30, mode="s1-compat"))
    assert [c[0][1].max_new_tokens for c in backend.calls[:2]] == [20, 16]
    # one token of context left in round 1; then no room for an answer: the backend is not called
    res, backend, _ = run(tok, {M1: {"think": [[X] * 8 + [IM_START], [X] * 50], "answer": ANS}},
                          BudgetConfig(thinking_budget=20, num_wait=1, total_budget=15, mode="s1-compat"))
    assert [c[0][1].max_new_tokens for c in backend.calls] == [10, 1]
    assert res[0].thinking_tokens == 10 and res[0].meta["no_room_for_answer"] and res[0].answer_tokens == 0


@pytest.mark.parametrize("mode", ["independent", "s1-compat"])
def test_forced_spans_mark_each_injected_wait_and_the_close(tok, X, ANS, mode):
    # the model writes "Wait" itself once: only the injected ones are spans (`iwsft view` highlights them)
    own = tok.encode(" Wait", add_special_tokens=False)
    seg = [X] + own + [X, IM_END]
    res, _, _ = run(tok, {M1: {"think": [seg] * 3, "answer": ANS}}, BudgetConfig(thinking_budget=100, num_wait=2, mode=mode))
    r = res[0]
    assert r.text == " x Wait xWait x Wait xWait x Wait x<|im_start|>answer 42"
    assert [(r.text[a:b], kind) for a, b, kind in r.forced] == [("Wait", "wait"), ("Wait", "wait"), ("<|im_start|>answer", "close")]
    assert [a for a, _, _ in r.forced[:2]] == [r.text.index("xWait") + 1, r.text.index("xWait", 10) + 1]
    capped, _, _ = run(tok, {M1: {"think": [[X] * 50], "answer": ANS}}, BudgetConfig(thinking_budget=10, mode=mode))
    assert [(capped[0].text[a:b], k) for a, b, k in capped[0].forced] == [("\n<|im_start|>answer\nFinal Answer:", "close")]
