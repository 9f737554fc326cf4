"""Offline grader: extraction rules, integer / math / choice equivalence (one named case per pitfall
of docs/method.md#answer-extraction-and-grading), math-verify false positives and their guards,
the timeout pool, determinism."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import time

import pytest

from harness.core.errors import UserError
from harness.evaluation.grading import Verdict, kind_of, grade_many, grade_many_detailed, grade_one
from harness.evaluation.grading.equivalence import math_equal, numeric_value, to_int
from harness.evaluation.grading.extract import extract_answer, extract_choice
from harness.evaluation.grading.pool import _init_worker as _real_init_worker
from harness.evaluation.grading.pool import call_with_timeout, map_with_timeout

T = "<|im_start|>think\n"
A = "\n<|im_start|>answer\n"


# ---- extraction --------------------------------------------------------------------------------

EXTRACTION = [
    # name, response, delimiter (None = default), expected
    ("answer_section_beats_thinking", T + r"maybe \boxed{7}" + A + r"Answer: \boxed{8}", None, "8"),
    ("last_delimiter_wins", T + "x" + A + r"\boxed{1}" + A + r"\boxed{2}", None, "2"),
    ("last_boxed_in_section", A + r"first \boxed{1}, corrected \boxed{2}", None, "2"),
    ("boxed_balanced_braces", A + r"\boxed{\frac{1}{2}} done", None, r"\frac{1}{2}"),
    ("boxed_set_braces", A + r"\boxed{\{1,2\}}", None, r"\{1,2\}"),
    ("fbox", A + r"\fbox{5}", None, "5"),
    ("boxed_space_form", A + r"so \boxed 5", None, "5"),
    ("unclosed_boxed_skipped", A + r"\boxed{3} then \boxed{4", None, "3"),
    # Changed in grader 2 (issue 25, pattern 6): a later explicit final answer beats an earlier box
    # (was "3": the box always won, so an intermediate \boxed{} step overrode the stated answer).
    ("later_answer_colon_beats_earlier_boxed", A + "\\boxed{3}\nAnswer: 4", None, "4"),
    ("answer_colon", A + "Answer: 42", None, "42"),
    ("final_answer_next_line", A + "Final Answer:\n\n $\\frac12$.", None, r"\frac12"),
    ("last_answer_colon", A + "Answer: 1\nAnswer: 2", None, "2"),
    ("answer_colon_with_answer_is", A + "Answer: The answer is 5.", None, "5"),
    ("the_answer_is", A + "so the answer is 2.5. Done", None, "2.5"),
    ("section_without_answer_is_unextracted", T + r"\boxed{7}" + A + "I am not sure about 12", None, None),
    ("no_section_thinking_boxed", T + r"long thought \boxed{9} and 11 more", None, "9"),
    ("no_section_thinking_answer_is", T + "so the answer is 12. Wait, 13", None, "12"),
    ("truncated_never_last_number", T + "3 + 4 = 7, so 7 times 12 is 84", None, None),
    ("empty_response", "", None, None),
    ("think_tag_delimiter", r"<think>\boxed{1}</think>The answer is \boxed{2}", "</think>", "2"),
    ("think_tag_delimiter_no_answer", r"<think>\boxed{1}</think>I give up", "</think>", None),
]


@pytest.mark.parametrize("name,response,delim,expected", EXTRACTION, ids=[c[0] for c in EXTRACTION])
def test_extraction(name, response, delim, expected):
    kwargs = {} if delim is None else {"delimiter": delim}
    assert extract_answer(response, **kwargs) == expected


# ---- integer kind (AIME24, arith) ----------------------------------------------------------------

INTEGER = [
    # name, answer section text, gold, correct
    ("zero_padded_gold", r"\boxed{25}", "025", True),
    ("zero_padded_answer", r"\boxed{025}", "25", True),
    ("float_integer", r"\boxed{25.0}", "25", True),
    ("dollars", "Answer: $25$", "25", True),
    ("thousands_comma", r"\boxed{1,000}", "1000", True),
    ("latex_thousands", r"\boxed{1{,}000}", "1000", True),
    ("text_wrapper", r"\boxed{\text{25}}", "25", True),
    ("trailing_period", "Answer: 25.", "25", True),
    ("assignment", r"\boxed{x = 25}", "25", True),
    ("degrees", r"\boxed{25^\circ}", "25", True),
    ("wrong_integer", r"\boxed{24}", "25", False),
    ("non_integer_is_wrong", r"\boxed{25.5}", "25", False),
    ("fraction_is_wrong", r"\boxed{\frac{50}{2}}", "25", False),
    ("words_are_wrong", "Answer: twenty-five", "25", False),
    ("huge_number_is_wrong_not_error", r"\boxed{" + "9" * 5000 + "}", "25", False),
]


@pytest.mark.parametrize("name,section,gold,correct", INTEGER, ids=[c[0] for c in INTEGER])
def test_integer_grading(name, section, gold, correct):
    for bench in ("aime24", "arith"):
        v = grade_one(bench, T + "thinking 99" + A + section, gold)
        assert v.correct is correct
        assert v.extracted is not None


def test_integer_truncated_response_is_unextracted():
    v = grade_one("aime24", T + "we get 25 and then 25 again", "25")
    assert v == Verdict(correct=False, extracted=None)


def test_to_int():
    assert to_int("025") == 25 and to_int("-3") == -3 and to_int("25.00") == 25
    assert to_int("2.5") is None and to_int(None) is None and to_int("") is None


# ---- math kind (MATH500) -------------------------------------------------------------------------

MATH = [
    # name, prediction, gold, correct. Guards refer to harness/evaluation/grading/equivalence.py.
    ("guard1_bare_gold_collapses_to_1", r"1+\frac{1}{e}", r"1-\frac{1}{e}", False),
    ("guard1_factorial_bare_reads_5", "5", "5!", False),
    ("factorial_quotient_value", "30240", r"\frac{10!}{5!}", True),
    ("factorial_quotient_different", r"\frac{9!}{4!}", r"\frac{10!}{5!}", False),
    ("factorial_quotient_large", "9900", r"\frac{100!}{98!}", True),
    ("guard2_mathrm_e_collapse", r"1 + \frac{1}{\mathrm{e}}", r"1 - \frac{1}{\mathrm{e}}", False),
    ("guard2_mathrm_e_still_correct", r"1-\frac{1}{\mathrm{e}}", r"1-\frac{1}{e}", True),
    ("guard2_mathrm_e_reciprocal", r"\frac{1}{\mathrm{e}}", "e^{-1}", True),
    ("guard2_operatorname_collapse", r"1 + \frac{1}{\operatorname{e}}", r"1 - \frac{1}{\operatorname{e}}", False),
    ("guard2_unknown_macro_collapse", r"2+\weird{4}", r"2+\weird{3}", False),
    ("guard3_string_fallback_deletes_mathbf", r"3\times\mathbf{5}", r"3\times\mathbf{4}", False),
    ("guard4_unit_stripping_deletes_digits", r"3\text{7}", r"3\text{5}", False),
    ("guard5_equation_eq_0_vs_0", "2x+3=0", "0", False),
    ("guard5_assignment_is_fine", "x = 5", "5", True),
    ("guard5_assignment_gold_side", "5", "x=5", True),
    ("guard5_different_equations", "x^2+1=0", "x^2-1=0", False),
    ("guard6_constant_relations", r"3 \equiv 7", r"3 \equiv 5", False),
    ("guard7_text_choice_label", "C", r"\text{(C)}", True),
    ("guard7_text_choice_paren", "(C)", r"\text{(C)}", True),
    ("guard7_text_choice_wrong", "D", r"\text{(C)}", False),
    ("guard7_text_word_case", "monday", r"\text{Monday}", True),
    ("guard7_text_word_wrong", "Tuesday", "Monday", False),
    ("guard7_anagram_not_equal", "neve", "even", False),
    ("interval_brackets_matter", "(1,2]", "[1,2)", False),
    ("interval_same", "[1,2)", "[1,2)", True),
    ("interval_union", r"(-\infty,2)\cup(3,\infty)", r"(-\infty, 2) \cup (3, \infty)", True),
    ("tuple_with_left_right", r"(3,\frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", True),
    ("tuple_wrong_component", r"(3,\frac{\pi}{3})", r"(3,\frac{\pi}{2})", False),
    ("half_decimal", "0.5", r"\frac{1}{2}", True),
    ("half_short_frac", r"\frac12", "0.5", True),
    ("percent_gold", "10", r"10\%", True),
    ("percent_answer", r"10\%", "10", True),
    ("no_x100_tolerance", "0.5", "50", False),
    ("units_stripped", "5", r"5\text{ cm}", True),
    ("degrees_stripped", "90", r"90^\circ", True),
    ("dollars_and_commas", "32000", r"\$32,000", True),
    ("dfrac", r"\frac34", r"\dfrac{3}{4}", True),
    ("sqrt_simplified", r"\sqrt8", r"2\sqrt{2}", True),
    ("factored_polynomial", "(x+2)(x+5)", "x^2+7x+10", True),
    ("unordered_list", "7,5,3", "3, 5, 7", True),
    ("complex", "6-5i", "6 - 5i", True),
    ("complex_conjugate_wrong", "-2-7i", "-2 + 7i", False),
    ("matrix_wrong_entry", r"\begin{pmatrix}1\\3\end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", False),
    ("mixed_number", r"1\frac12", r"\frac32", True),
    ("pi_is_not_3_14159", "3.14159", r"\pi", False),
    ("decimal_approximation_too_coarse", "0.866", r"\frac{\sqrt{3}}{2}", False),
    ("zero_padded", "025", "25", True),
    ("sign_matters", "q-p", "p-q", False),
    ("unparseable_identical", r"0.\overline{3}", r"0.\overline{3}", True),
    # Documented limits (accepted, not guarded): math-verify's percent reading, 6-digit rounding,
    # and unit stripping as in s1's / Hendrycks' normalisers.
    ("limit_percent_as_fraction", "0.1", r"10\%", True),
    ("limit_six_digit_rounding", "0.3333333", r"\frac13", True),
    ("limit_units_ignored", r"5\text{ m}", r"5\text{ cm}", True),
]


@pytest.mark.parametrize("name,pred,gold,correct", MATH, ids=[c[0] for c in MATH])
def test_math_equivalence(name, pred, gold, correct):
    assert math_equal(pred, gold) is correct


def test_math_through_grade_one():
    v = grade_one("math500", T + "..." + A + r"Answer: $\boxed{\dfrac{1}{2}}$", "0.5")
    assert v == Verdict(True, r"\dfrac{1}{2}")
    assert grade_one("math500", T + "we get x = 3", "3") == Verdict(False, None)


def test_numeric_value_independent_check():
    assert numeric_value(r"\frac{\sqrt{3}}{2}") == pytest.approx(3 ** 0.5 / 2)
    assert numeric_value(r"2^{10}") == 1024
    assert numeric_value(r"\frac{10!}{5!}") == 30240
    for not_a_number in ("x+1", "(1,2)", "10\\%", "x=5", r"9^{9^{9^{9}}}", r"\weird{3}"):
        assert numeric_value(not_a_number) is None


MV_RAW = [
    # The false positives the guards exist for, reproduced with math-verify itself (0.9.x). If an
    # upgrade fixes one, this test tells us; the guards stay harmless.
    ("bare_strings_collapse", r"1-\frac{1}{e}", r"1+\frac{1}{e}", "default_bare"),
    ("bare_factorial", "5!", "5", "default_bare"),
    ("any_match_prefix_collapse", r"$1 - \frac{1}{\mathrm{e}}$", r"$1 + \frac{1}{\mathrm{e}}$", "default"),
    ("any_match_operatorname", r"$1-\frac{1}{\operatorname{e}}$", "$1$", "default"),
    ("equation_rhs", "$0$", "$2x+3=0$", "default"),
    ("anagram_product_of_symbols", "$even$", "$neve$", "default"),
    ("string_fallback_deletes_mathbf", r"$3\times\mathbf{4}$", r"$3\times\mathbf{5}$", "first_match"),
    ("unit_strip_deletes_digits", r"$3\text{5}$", r"$3\text{7}$", "first_match"),
    ("constant_relations", r"$3 \equiv 5$", r"$3 \equiv 7$", "first_match"),
]


@pytest.mark.parametrize("name,gold,pred,mode", MV_RAW, ids=[c[0] for c in MV_RAW])
def test_raw_math_verify_false_positives(name, gold, pred, mode):
    import importlib.metadata

    # pyproject.toml pins math-verify to the tested 0.9 series; another version fails here (not a skip),
    # so an upgrade is a decision: re-check these cases and the guards, then widen the pin.
    version = importlib.metadata.version("math-verify")
    assert version.startswith("0.9."), f"math-verify {version} is outside the tested 0.9 series (pyproject.toml)"
    from math_verify import LatexExtractionConfig, parse, verify

    if mode == "first_match":
        kw = dict(extraction_config=[LatexExtractionConfig()], extraction_mode="first_match")
    else:
        kw = {}
    g, p = parse(gold, parsing_timeout=None, **kw), parse(pred, parsing_timeout=None, **kw)
    assert verify(g, p, timeout_seconds=None) is True  # raw math-verify: wrongly equal
    assert math_equal(pred.strip("$"), gold.strip("$")) is False  # ours: not equal


# ---- choice kind (GPQA Diamond) -------------------------------------------------------------------

CHOICE = [
    # name, answer section, gold, expected extracted, correct
    ("boxed", r"\boxed{B}", "B", "B", True),
    ("boxed_lowercase", r"\boxed{b}", "B", "B", True),
    ("boxed_textbf_paren", r"\boxed{\textbf{(C)}}", "C", "C", True),
    ("answer_colon", "Answer: C", "C", "C", True),
    ("answer_colon_lowercase", "Answer: c.", "C", "C", True),
    ("answer_colon_paren", "**Answer:** (D)", "D", "D", True),
    ("paren_letter", "so it must be (D) here", "D", "D", True),
    ("last_mention_wins", r"Answer: A. On reflection \boxed{C}", "C", "C", True),
    ("last_paren_wins", "(A) is wrong, (B) is right", "B", "B", True),
    ("gold_lowercase", r"\boxed{A}", "a", "A", True),
    ("wrong_letter", r"\boxed{A}", "B", "A", False),
    ("article_is_not_choice_a", "Answer: a detailed analysis is needed", "A", None, False),
    ("function_call_is_not_choice_c", "we need f(c) = 0 first", "C", None, False),
    ("letter_e_not_a_choice", r"\boxed{E}", "A", None, False),
    ("no_letter_no_default_a", "I believe the second option", "A", None, False),
]


@pytest.mark.parametrize("name,section,gold,extracted,correct", CHOICE, ids=[c[0] for c in CHOICE])
def test_choice_grading(name, section, gold, extracted, correct):
    v = grade_one("gpqa_diamond", T + "thinking about (A)" + A + section, gold)
    assert v == Verdict(correct=correct, extracted=extracted)


def test_choice_thinking_only_when_no_answer_section():
    assert extract_choice(T + "I lean to (A)" + A + "not sure") is None
    assert extract_choice(T + "I lean to (A), final \\boxed{B} and more") == "B"


# ---- API contract ----------------------------------------------------------------------------------

def test_benchmark_kinds_and_unknown_benchmark():
    assert {b: kind_of(b) for b in ("aime24", "arith", "math500", "gpqa_diamond")} == \
        {"aime24": "integer", "arith": "integer", "math500": "math", "gpqa_diamond": "choice"}
    with pytest.raises(UserError, match="aime24, arith, arith2, arith_train, gpqa_diamond, math500"):
        grade_one("aime", r"\boxed{1}", "1")
    with pytest.raises(UserError, match="aime24, arith"):
        grade_many("mmlu", [])


@pytest.mark.parametrize("bench,gold,message", [
    ("aime24", "1.5", "gold '1.5' is not an integer; aime24 golds must be integers"),
    ("aime24", "", "gold answer '' is empty or not a string; give every aime24 row a gold answer"),
    ("gpqa_diamond", "E", "gold 'E' is not a letter A-D"),
    ("math500", None, "gold answer None is empty or not a string; give every math500 row a gold answer"),
])
def test_bad_gold_is_user_error(bench, gold, message):
    with pytest.raises(UserError) as e:
        grade_one(bench, r"\boxed{1}", gold)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_verdict_is_frozen():
    v = Verdict(True, "1")
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        v.correct = False  # type: ignore[misc]
    assert v.correct is True


def test_deterministic_and_order_preserving():
    items = [(A + rf"\boxed{{{p}}}", g) for _, p, g, _ in MATH[:20]]
    a = grade_many("math500", items, workers=2)
    b = grade_many("math500", list(items), workers=1)
    assert a == b
    assert [v.correct for v in a] == [c for *_, c in MATH[:20]]


# ---- timeouts ----------------------------------------------------------------------------------------

def _sleep_then_return(seconds: float):
    time.sleep(seconds)
    return seconds


def _judge_hangs_on_marker(kind, extracted, gold):
    if extracted == "hang":
        time.sleep(60)
    return extracted == gold


def _judge_raises_or_dies(kind, extracted, gold):
    if extracted == "raise":
        raise ValueError("grader bug")
    if extracted == "die":
        import os
        os._exit(3)
    return extracted == gold


@pytest.mark.parametrize("workers", [1, 2])
def test_grader_exception_or_dead_worker_grades_item_wrong(workers):
    items = [(A + r"\boxed{raise}", "1")] + [(A + rf"\boxed{{{i}}}", str(i)) for i in range(8)]
    if workers == 2:
        items.insert(3, (A + r"\boxed{die}", "1"))
    res = grade_many_detailed("arith", items, workers=workers, _judge=_judge_raises_or_dies)
    assert res[0][0] == Verdict(False, "raise") and res[0][1].startswith("error: ValueError")
    if workers == 2:
        assert res[3] == (Verdict(False, "die"), "error: grading worker died")
    assert sum(v.correct for v, _ in res) == 8


def _die_or_sleep(x):
    if x == "die":
        time.sleep(0.3)             # long enough for the bystander to be in flight when the worker dies
        import os
        os._exit(3)
    time.sleep(x)
    return x


def test_a_worker_death_never_charges_a_bystander():
    # "die" kills its worker while 1.0 runs in the other one: both come back broken. Retried alone, "die"
    # dies again (an error) and 1.0 succeeds; retried together, 1.0 would die with it a second time.
    args = [("die",), (1.0,), (0.0,), (0.0,), (0.0,), (0.0,)]
    out = map_with_timeout(_die_or_sleep, args, timeout_s=30.0, workers=2, in_process=False)
    assert out[0].error == "grading worker died" and not out[0].timed_out
    assert [o.value for o in out[1:]] == [1.0, 0.0, 0.0, 0.0, 0.0] and all(o.ok for o in out[1:])


def test_a_worker_dead_while_idle_restarts_the_pool_and_charges_no_item(monkeypatch):
    # The pool breaks at a submit (a worker died between two items, which no real crash can time): what
    # was in flight goes back to the queue, a fresh pool takes over, and every item is graded once.
    from concurrent.futures.process import BrokenProcessPool

    import harness.evaluation.grading.pool as pool_mod

    class BreaksAtSubmit:
        def __init__(self, pool, at):
            self.pool, self.n, self.at = pool, 0, at

        def submit(self, *args, **kw):
            self.n += 1
            if self.n == self.at:
                raise BrokenProcessPool("a worker died while idle")
            return self.pool.submit(*args, **kw)

        def __getattr__(self, name):
            return getattr(self.pool, name)

    real, made = pool_mod._new_pool, []
    monkeypatch.setattr(pool_mod, "_new_pool", lambda workers: made.append(
        BreaksAtSubmit(real(workers), 2 if not made else 0)) or made[-1])
    args = [(0.2,), (0.0,)] + [(0.0,)] * 8
    out = map_with_timeout(_sleep_then_return, args, timeout_s=30.0, workers=2, in_process=False)
    assert len(made) == 2                                   # the broken pool was replaced, once
    assert [o.value for o in out] == [a[0] for a in args] and all(o.ok for o in out)


def test_ctrl_c_mid_run_kills_the_workers_and_propagates():
    import multiprocessing
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    t0 = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)          # "Ctrl-C" while two 60 s items are in flight
        with pytest.raises(KeyboardInterrupt):
            map_with_timeout(_sleep_then_return, [(60.0,)] * 2 + [(0.0,)] * 8, timeout_s=120.0, workers=2,
                             in_process=False)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert time.monotonic() - t0 < 30                      # the stuck workers were killed, not waited for
    assert not [c for c in multiprocessing.active_children() if c.is_alive()]


def test_pool_timeout_kills_and_recovers():
    args = [(0.0,), (60.0,)] + [(0.01,)] * 8 + [(60.0,), (0.0,)]
    t0 = time.monotonic()
    out = map_with_timeout(_sleep_then_return, args, timeout_s=1.0, workers=2)
    elapsed = time.monotonic() - t0
    assert [o.timed_out for o in out] == [a[0] == 60.0 for a in args]
    assert all(o.ok and o.value == a[0] for o, a in zip(out, args) if a[0] != 60.0)
    assert elapsed < 20


def test_in_process_timeout():
    out = call_with_timeout(_sleep_then_return, (30.0,), 0.3)
    assert out.timed_out and not out.ok
    assert call_with_timeout(_sleep_then_return, (0.0,), 0.3).value == 0.0


def test_grade_many_timed_out_item_is_wrong_and_keeps_extraction():
    items = [(A + r"\boxed{hang}", "1")] + [(A + rf"\boxed{{{i}}}", str(i)) for i in range(8)]
    res = grade_many_detailed("arith", items, timeout_s=1.0, workers=2, _judge=_judge_hangs_on_marker)
    assert res[0] == (Verdict(False, "hang"), "timeout")
    assert all(v.correct for v, _ in res[1:])


def test_real_math_verify_hang_times_out_in_process():
    # A SymPy power tower: math-verify (signal timeouts disabled) would run for minutes.
    t0 = time.monotonic()
    res = grade_many_detailed("math500", [(A + r"\boxed{9^{9^{9^{9}}}}", "1")], timeout_s=1.0, workers=1)
    assert res[0] == (Verdict(False, "9^{9^{9^{9}}}"), "timeout")
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("response,gold,extracted,correct", [
    ("er\n<|im_start|>answer\n4 + 0 = 4", "4", "4", True),             # a bare stated value in the answer section
    ("x<|im_start|>answer\nFinal Answer: 7 + 7 = 10", "10", "7 + 7 = 10", True),  # worked sum: its result
    ("<|im_start|>answer\n 12.", "12", "12", True),
    ("<|im_start|>answer\nI am not sure about 12", "12", None, False),  # prose is not a bare value
    ("thinking 4 + 0 = 4 and no answer section", "4", None, False),   # never from thinking text
])
def test_bare_value_in_answer_section(response, gold, extracted, correct):
    from harness.evaluation.grading import grade_one

    v = grade_one("arith", response, gold)
    assert (v.extracted, v.correct) == (extracted, correct)


# ---- "Numbers a reviewer can trust": explicit answers win, readable integer forms, special tokens --

CHOICE_EXPLICIT = [
    # name, answer section, expected letter. An explicit answer beats a later bare "(X)" mention;
    # a lower-case "(a)" is a step label, never an option.
    ("boxed_then_discussion", r"\boxed{B} because option (A) is wrong", "B"),
    ("answer_colon_then_step_label", "Answer: C. In step (a) we used the ideal gas law", "C"),
    ("answer_is_then_paren", "The answer is D; (B) fails the second test", "D"),
    ("answer_then_step_list", "Answer: B\n(a) first step\n(b) second step", "B"),
    ("last_explicit_wins", "Answer: A\nOn reflection the answer is C, not (D)", "C"),
    ("bare_paren_without_explicit", "so it must be (D) here", "D"),
    ("step_labels_only", "(a) compute the mass (b) compare", None),
]


@pytest.mark.parametrize("name,section,expected", CHOICE_EXPLICIT, ids=[c[0] for c in CHOICE_EXPLICIT])
def test_choice_explicit_answer_beats_bare_letter(name, section, expected):
    assert extract_choice(T + "thinking" + A + section) == expected


def test_choice_truncated_thinking_bare_letter_is_no_answer():
    # Cut off inside its thinking: a "(B)" mention there is not an answer; an explicit one still is.
    assert extract_choice(T + "Option (B) looks plausible, but (C) has the right") is None
    assert grade_one("gpqa_diamond", T + "Option (B) looks plausible", "B") == Verdict(False, None)
    assert extract_choice(T + "so the answer is B, and (C) is out") == "B"


INTEGER_FORMS = [
    # name, answer section, gold, extracted, correct
    ("rhs_of_final_equals", "Answer: m + n = 37", "37", "m + n = 37", True),
    ("rhs_chain", r"\boxed{x = 3 + 4 = 7}", "7", "x = 3 + 4 = 7", True),
    ("rhs_latex_lhs", r"Answer: $\binom{5}{2} = 10$", "10", r"\binom{5}{2} = 10", True),
    ("unit_word", "Answer: 25 apples", "25", "25 apples", True),
    ("unit_text", r"\boxed{25 \text{ ways}}", "25", r"25 \text{ ways}", True),
    ("unit_squared", r"Answer: $25\text{ cm}^2$", "25", r"25\text{ cm}^2", True),
    ("bare_value_with_unit", "25 dollars", "25", "25 dollars", True),
    ("line_after_prose_answer", "Answer: The number of ways is\n25", "25", "25", True),
    ("display_after_prose_answer", "**Answer:** Adding the counts gives\n\\[\n 25\n\\]", "25", "25", True),
    ("display_after_final_answer", "Final Answer:\n$$\n3 + 4 = 7\n$$", "7", "3 + 4 = 7", True),
    ("bare_display_block", "\\[\n25\n\\]", "25", "25", True),
    # Never a number picked out of a line that states several values.
    ("several_values_prose", "Answer: 3 apples and 5 pears", "5", "3 apples and 5 pears", False),
    ("several_assignments", "Answer: x = 3 and y = 5", "5", "x = 3 and y = 5", False),
    # Changed in grader 2 (issue 25, pattern 5): an Answer line that is a sentence ending in its
    # value gives the value (was the whole sentence, graded wrong).
    ("prose_equation", "Answer: The total is 3 + 4 = 7", "7", "7", True),
    ("equation_equals_zero", "Answer: 2x + 3 = 0", "0", "2x + 3 = 0", False),
    ("negated_value", "Answer: not 25", "25", "not 25", False),
]


@pytest.mark.parametrize("name,section,gold,extracted,correct", INTEGER_FORMS, ids=[c[0] for c in INTEGER_FORMS])
def test_integer_readable_forms(name, section, gold, extracted, correct):
    for bench in ("aime24", "arith"):
        assert grade_one(bench, T + "thinking 99" + A + section, gold) == Verdict(correct, extracted)


@pytest.mark.parametrize("response", [
    A + "<|im_start|>solution",
    A + "Answer: <|im_start|>solution",
    A + r"\boxed{<|endoftext|>}",
    T + "Answer: <|im_start|>",
])
def test_special_token_is_never_an_answer(response):
    assert extract_answer(response) is None
    assert grade_one("math500", response, "1").extracted is None


def test_special_token_ends_the_answer():
    assert extract_answer(A + "Answer: 42<|im_end|>") == "42"


def test_factorial_quotient_large_arguments():
    # Raw math-verify 0.9 calls 1000!/998! (= 999000) equal to 999!/997! (= 997002), as it does
    # 30!/28! and 29!/27!; ours evaluates the quotient as the exact product of its terms.
    assert math_equal(r"\frac{999!}{997!}", r"\frac{1000!}{998!}") is False
    assert math_equal(r"\frac{30!}{28!}", r"\frac{29!}{27!}") is False
    assert math_equal("999000", r"\frac{1000!}{998!}") is True
    assert math_equal(r"\frac{1000!}{998!}", r"\frac{1000!}{998!}") is True
    assert numeric_value(r"\frac{2000!}{1998!}") == 2000 * 1999


# ---- guard 4's numeric evaluation, pinned on concrete strings (values worked out by hand) -----------

E_PI_SQRT2 = 2.718281828459045 * 3.141592653589793 * 1.4142135623730951

NUMERIC = [
    # name, answer, value (None = not a plain number expression: guard 4 stays silent)
    ("cdot", r"2\cdot 3", 6),
    ("times", r"2\times 3", 6),
    ("div", r"6\div 4", 1.5),
    ("pi_implicit_product", r"2\pi", 2 * 3.141592653589793),
    ("euler_e", "e", 2.718281828459045),
    ("all_three_names", r"e\pi\sqrt{2}", E_PI_SQRT2),
    ("cube_root", r"\sqrt[3]{8}", 2),
    ("fourth_root_of_frac", r"\sqrt[4]{\frac{1}{16}}", 0.5),
    ("nested_wrapper", r"\text{\text{5}}", 5),
    ("square_brackets_group", "2[1+2]", 6),
    ("inner_leading_zero", "2+05", 7),
    ("frac_of_roots", r"\frac{\sqrt{8}}{\sqrt{2}}", 2),
    ("unclosed_sqrt", r"\sqrt{2", None),
    ("unclosed_root", r"\sqrt[3]{8", None),
    ("command_without_argument", r"1+\sqrt", None),
    ("other_function_name", "sin(1)", None),
    ("zero_over_zero", r"\frac{0}{0}", None),
    ("factorial_of_1000_not_evaluated", "1000!-1000!", None),
    ("tuple", "(1,2)", None),
]


@pytest.mark.parametrize("name,answer,value", NUMERIC, ids=[c[0] for c in NUMERIC])
def test_numeric_value_cases(name, answer, value):
    got = numeric_value(answer)
    if value is None:
        assert got is None
    else:
        assert got == pytest.approx(value, rel=1e-12)


def test_numeric_value_length_limit():
    # The normalised expression is evaluated up to 200 characters, not beyond (cost bound).
    at_limit = "12" + "+1" * 99      # 200 characters, 12 + 99 = 111
    assert len(at_limit) == 200 and numeric_value(at_limit) == 111
    assert numeric_value("1" + at_limit) is None  # 201 characters


NUMERIC_MORE = [
    # name, answer, value: argument parsing of \frac / \sqrt and factorial quotients
    ("frac_then_more", r"\frac{1}{2}+1", 1.5),
    ("frac_single_token_argument", r"\frac{1}e+1", 1 + 1 / 2.718281828459045),
    ("plain_factorial_quotient", "10!/8!", 90),
    ("factorial_quotient_below_one", r"\frac{8!}{10!}", 1 / 90),
]


@pytest.mark.parametrize("name,answer,value", NUMERIC_MORE, ids=[c[0] for c in NUMERIC_MORE])
def test_numeric_value_arguments(name, answer, value):
    assert numeric_value(answer) == pytest.approx(value, rel=1e-12)


def test_numbers_differ_tolerance():
    from harness.evaluation.grading.equivalence import _numbers_differ

    # Relative 1e-6 of the larger magnitude, never below 1e-6 absolute (magnitudes under 1 count as 1).
    assert _numbers_differ(0, 1e-6) is False and _numbers_differ(0, 5e-7) is False
    assert _numbers_differ(0, 1.5e-6) is True
    assert _numbers_differ(1e6, 1e6 + 0.5) is False and _numbers_differ(1e6, 1e6 + 2) is True
    assert _numbers_differ(1e6 + 1.0000005, 1e6) is False and _numbers_differ(1e6, 1e6 + 1.0000005) is False


def test_math_verify_logging_is_quieted(monkeypatch):
    import logging

    from harness.evaluation.grading import equivalence

    logger = logging.getLogger("math_verify")
    monkeypatch.setattr(equivalence, "_MV_LOGGER_QUIET", False)
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    equivalence.mv_parse("1")
    assert logger.level == logging.ERROR


def test_judge_entry():
    from harness.evaluation.grading.equivalence import judge

    assert judge("integer", None, "5") is False and judge("integer", "5", "5") is True
    with pytest.raises(ValueError, match="unknown grading kind 'rank'"):
        judge("rank", "5", "5")


# ---- extraction details, one case per rule (expected strings read off the response) ----------------

EXTRACTION_DETAILS = [
    # name, response (default delimiter), expected
    ("answer_is_keeps_whole_line", A + "so the answer is x + 1.\nmore text", "x + 1"),
    ("answer_is_ends_at_line", A + "so the answer is 5\nWait\nDone", "5"),
    ("trailing_bold_stripped", A + "**Answer: 25**", "25"),
    ("inner_dollars_kept", A + "Answer: x = $5$", "x = $5$"),
    ("dollar_wrapped_letter", A + "Answer: $X$", "X"),
    ("empty_math_is_nothing", A + "the answer is $$", None),
    ("inline_math_parens", A + r"Answer: \(25\)", "25"),
    ("display_math_brackets", A + r"Answer: \[25\]", "25"),
    ("inline_math_on_the_right_kept", A + r"Answer: x = \(5\)", r"x = \(5\)"),
    ("display_math_on_the_right_kept", A + r"Answer: x = \[5\]", r"x = \[5\]"),
    ("value_line_beats_next_line", A + "Answer: $\\pi$\n3.14", r"\pi"),
    # grader 2 (pattern 5): the sentence's value, still the Answer line's and not the next line's
    ("prose_with_number_is_the_line", A + "Answer: There are 25 ways\n30", "25 ways"),
    ("prose_answer_next_line_after_newline", A + "Final Answer:\nThe number of ways is\n25", "25"),
    ("prose_answer_without_next_line", A + "Answer: The number of ways is", "The number of ways is"),
    ("prose_answer_then_prose", A + "Answer: The number of ways is\nI am not sure", "The number of ways is"),
    ("answer_colon_with_nothing", A + "Answer:", None),
    ("later_section_without_box", A + r"\boxed{1}" + A + "Answer: 2", "2"),
    ("boxed_piecewise_escaped_brace", A + r"\boxed{\left\{ 1 \right.}", r"\left\{ 1 \right."),
    ("display_block_first_closer", A + "\\[\n25\n\\] so \\[x\\]", "25"),
    ("display_block_lines_joined", A + "Final Answer:\n\\[\n3 + 4\n= 7\n\\]", "3 + 4 = 7"),
    ("bare_chain_rhs", A + "2 + 2 = 3 + 1 = 4", "4"),
    ("bare_equation_is_no_value", A + "2x + 3 = 0", None),
    ("bare_two_word_prose", A + "no idea", None),
    ("bare_upper_case_prose", A + "NO ANSWER", None),
    ("bare_line_64_chars", A + "2" * 64, "2" * 64),
    ("bare_line_65_chars", A + "2" * 65, None),
]


@pytest.mark.parametrize("name,response,expected", EXTRACTION_DETAILS, ids=[c[0] for c in EXTRACTION_DETAILS])
def test_extraction_details(name, response, expected):
    assert extract_answer(response) == expected


def test_custom_delimiter_reaches_every_kind():
    # "</think>" models: the thinking's \boxed{1} / \boxed{A} is not the answer; the section's bare value is.
    assert grade_one("aime24", r"<think>\boxed{1}</think>2", "2", answer_delimiter="</think>") == Verdict(True, "2")
    assert grade_many("aime24", [(r"<think>\boxed{1}</think>2", "2")], answer_delimiter="</think>") == [Verdict(True, "2")]
    assert grade_one("gpqa_diamond", r"<think>\boxed{A}</think>so (B)", "B", answer_delimiter="</think>") == \
        Verdict(True, "B")


TO_INT = [
    # text, integer (None = not an integer answer)
    (r"\$25", 25),
    ("x = $25$", 25),
    ("**25**", 25),
    (r"1\,000", 1000),
    (r"1\, 000", 1000),
    (r"25\quad", 25),
    ("25 dollars.", 25),
    ("Total = 25", 25),
    ("Total = Sum = 25", 25),
    ("The total = 25", None),    # a sentence, not a stated result
    ("2x + 3 = 0", None),        # an equation "= 0", not the value 0
    ("2X + 3 = 0", None),
    ("x = 0", 0),
]


@pytest.mark.parametrize("text,value", TO_INT, ids=[f"to_int{i}" for i in range(len(TO_INT))])
def test_to_int_forms(text, value):
    assert to_int(text) == value


def test_choice_letter_forms():
    from harness.evaluation.grading.equivalence import choice_letter

    assert [choice_letter(s) for s in ("b", "(b)", r"\text{B}", "$(C)$", "D.", "E", "BB")] == \
        ["B", "B", "B", "C", "D", None, None]


@pytest.mark.parametrize("gold", [["1"], {"a": 1}, True])
def test_gold_of_wrong_type_is_user_error(gold):
    with pytest.raises(UserError, match="is empty or not a string; give every math500 row a gold answer"):
        grade_one("math500", r"\boxed{1}", gold)


def _judge_always_true(kind, extracted, gold):
    return True


def test_grade_many_passes_judge_and_timeout():
    assert grade_many("arith", [(A + r"\boxed{7}", "8")], _judge=_judge_always_true) == [Verdict(True, "7")]
    items = [(A + r"\boxed{hang}", "1")] + [(A + rf"\boxed{{{i}}}", str(i)) for i in range(8)]
    t0 = time.monotonic()
    res = grade_many("arith", items, timeout_s=1.0, workers=2, _judge=_judge_hangs_on_marker)
    assert res == [Verdict(False, "hang")] + [Verdict(True, str(i)) for i in range(8)]
    assert time.monotonic() - t0 < 8  # the 1 s limit, not the 10 s default


def test_statuses():
    res = grade_many_detailed("aime24", [(A + r"\boxed{25}", "25"), (A + "I give up", "25"), (A + r"\boxed{24}", "25")])
    assert res == [(Verdict(True, "25"), "graded"), (Verdict(False, None), "unextracted"), (Verdict(False, "24"), "graded")]


@pytest.mark.parametrize("bench,n,workers,judge,in_process", [
    ("math500", 8, 2, None, False),     # math-verify may hang in C code: worker processes
    ("math500", 8, 1, None, True),
    ("math500", 7, 2, None, True),      # fewer than POOL_MIN_ITEMS: not worth starting workers
    ("aime24", 8, 2, None, True),       # integer and choice judging are plain string work
    ("gpqa_diamond", 8, 2, None, True),
    ("aime24", 8, 2, _judge_always_true, False),
])
def test_where_judging_runs(monkeypatch, bench, n, workers, judge, in_process):
    from harness.evaluation.grading import pool

    calls = []

    def record(fn, args, **kw):
        calls.append(kw)
        return [pool.Outcome(value=True) for _ in args]

    monkeypatch.setattr(pool, "map_with_timeout", record)
    gold = "B" if bench == "gpqa_diamond" else "1"
    grade_many(bench, [(A + r"\boxed{1}", gold)] * n, timeout_s=3.0, workers=workers, _judge=judge)
    assert calls == [dict(timeout_s=3.0, workers=workers, in_process=in_process)]


# ---- pool plumbing ---------------------------------------------------------------------------------

def test_default_workers(monkeypatch):
    from harness.evaluation.grading import pool

    monkeypatch.setattr(pool.os, "cpu_count", lambda: 16)
    assert [pool.default_workers(n) for n in (0, 1, 3, 100)] == [1, 1, 3, 8]  # at most 8, at least 1
    monkeypatch.setattr(pool.os, "cpu_count", lambda: 2)
    assert pool.default_workers(100) == 2
    monkeypatch.setattr(pool.os, "cpu_count", lambda: None)  # unknown: one worker
    assert pool.default_workers(100) == 1


def test_worker_ignores_ctrl_c():
    import signal

    from harness.evaluation.grading.pool import _init_worker

    old = signal.getsignal(signal.SIGINT)
    try:
        _init_worker()  # run here: the parent handles Ctrl-C, a worker must not die of it
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_in_process_call_without_timer():
    import signal
    import threading

    # No limit (None or 0): plain call, no timer installed.
    assert call_with_timeout(_sleep_then_return, (0.0,), None).value == 0.0
    assert call_with_timeout(_sleep_then_return, (0.0,), 0).value == 0.0
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert call_with_timeout(_judge_raises_or_dies, ("arith", "raise", "1"), None).error == "ValueError: grader bug"
    # Off the main thread SIGALRM cannot be used: still a plain call, not an error.
    out = []
    t = threading.Thread(target=lambda: out.append(call_with_timeout(_sleep_then_return, (0.0,), 1.0)))
    t.start()
    t.join()
    assert out[0].ok and out[0].value == 0.0
    # A caller's own timer is left alone (not cancelled, not replaced).
    old = signal.signal(signal.SIGALRM, lambda *a: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert call_with_timeout(_sleep_then_return, (0.0,), 1.0).value == 0.0
        assert 25.0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


NORMALIZE = [
    # answer, canonical string (the plain-string fast path of math_equal; rules in its docstring)
    ("1\n+2", "1+2"),
    ("x = $5$", "5"),
    (r"\$32", "32"),
    (r"\left. x^2 \right|_0^1", "x^2|_0^1"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
    (r"\Big( 1 \Big)", "(1)"),
    (r"1\,000", "1000"),
    (r"5\quad", "5"),
    (r"\dfrac{3}{4}", r"\frac{3}{4}"),
    (r"\tfrac{3}{4}", r"\frac{3}{4}"),
    (r"90^\circ", "90"),
    (r"90^{\circ}", "90"),
    (r"90\degree", "90"),
    (r"10\%", "10"),
    ("10%", "10"),
    (r"5\text{ cm}", "5"),
    (r"5\text{ cm}.", "5"),
    (r"\text{ cm}", "cm"),
    (r"\text{5.}", "5"),
    ("3, 5, 7", "3,5,7"),
    ("1,000", "1000"),
    ("x=5", "5"),
    ("N=5", "5"),
    (r"\sqrt8", r"\sqrt{8}"),
    ("3/4", r"\frac{3}{4}"),
    ("-3/4", r"\frac{-3}{4}"),
    ("2.50", "2.5"),
    ("2.0", "2"),
    ("0.250", "0.25"),
    (".25", "0.25"),
    ("-.25", "-0.25"),
    ("025", "25"),
    ("-025", "-25"),
    ("0.5", r"\frac{1}{2}"),
    (r"\boxed{7}", "7"),
]


@pytest.mark.parametrize("answer,canonical", NORMALIZE, ids=[f"normalize{i}" for i in range(len(NORMALIZE))])
def test_normalize_answer(answer, canonical):
    from harness.evaluation.grading.equivalence import normalize_answer

    assert normalize_answer(answer) == canonical


def test_start_method_follows_threads():
    import threading

    from harness.evaluation.grading.pool import _mp_context

    if threading.active_count() == 1:
        assert _mp_context().get_start_method() == "fork"  # fast, no __main__ guard needed
    release = threading.Event()
    t = threading.Thread(target=release.wait)
    t.start()
    try:
        assert _mp_context().get_start_method() == "spawn"  # forking a threaded parent can deadlock
    finally:
        release.set()
        t.join()


def test_timed_out_worker_is_killed():
    import multiprocessing

    out = map_with_timeout(_sleep_then_return, [(60.0,)] + [(0.0,)] * 7, timeout_s=1.0, workers=2)
    assert [o.timed_out for o in out] == [True] + [False] * 7
    assert multiprocessing.active_children() == []  # the stuck worker did not outlive the call


# Ctrl-C the instant a worker process has started, before the executor records it (ProcessPoolExecutor.
# _spawn_process: p.start(), then self._processes[p.pid] = p). Module-level classes: spawn pickles them.
class _ForkProcessInterrupted(multiprocessing.context.ForkProcess):
    def start(self):
        super().start()
        os.kill(os.getpid(), signal.SIGALRM)


class _SpawnProcessInterrupted(multiprocessing.context.SpawnProcess):
    def start(self):
        super().start()
        os.kill(os.getpid(), signal.SIGALRM)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_ctrl_c_the_instant_a_worker_starts_leaves_no_worker(monkeypatch, method):
    import harness.evaluation.grading.pool as pool_mod

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    proc = {"fork": _ForkProcessInterrupted, "spawn": _SpawnProcessInterrupted}[method]
    ctx = type("Ctx", (type(multiprocessing.get_context(method)),), {"Process": proc})()
    monkeypatch.setattr(pool_mod, "_mp_context", lambda: ctx)
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            map_with_timeout(_sleep_then_return, [(0.0,)] * 8, timeout_s=30.0, workers=2, in_process=False)
        alive = [repr(c) for c in multiprocessing.active_children() if c.is_alive()]
    finally:
        signal.signal(signal.SIGALRM, old)
        for c in multiprocessing.active_children():  # a leaked worker must not outlive this test
            c.kill()
            c.join()
    assert not alive


def _init_second_worker_late(*args):
    # Of the workers of the test's first pool one starts 3 s late (a slow SymPy import under load).
    d = os.environ["IWSFT_TEST_INIT_DIR"]
    for name in ("first", "second", None):
        try:
            os.close(os.open(os.path.join(d, str(name)), os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            continue
    if name == "second":
        time.sleep(3.0)
    _real_init_worker(*args)


def test_no_item_waits_for_a_worker_still_starting(monkeypatch, tmp_path):
    # One fast worker could answer the whole warm-up: the item queued behind the 60 s one would then wait
    # for the late worker and time out, charged with its start-up.
    import harness.evaluation.grading.pool as pool_mod

    monkeypatch.setenv("IWSFT_TEST_INIT_DIR", str(tmp_path))
    monkeypatch.setattr(pool_mod, "_init_worker", _init_second_worker_late)
    out = map_with_timeout(_sleep_then_return, [(60.0,)] + [(0.0,)] * 7, timeout_s=1.0, workers=2)
    assert (tmp_path / "second").exists()
    assert [o.timed_out for o in out] == [True] + [False] * 7


def test_killed_workers_are_reaped_before_the_kill_returns(monkeypatch):
    # The executor's manager thread reaps the killed workers too. When it wins waitpid() but records the
    # exit code late, our own join() gets ECHILD and returns at once: the worker still counts as alive.
    import threading

    import harness.evaluation.grading.pool as pool_mod

    real_waitpid = os.waitpid

    def waitpid(pid, options):
        if threading.current_thread() is threading.main_thread():
            time.sleep(0.2)                 # the manager thread gets there first ...
            return real_waitpid(pid, options)
        got = real_waitpid(pid, options)
        if got[0] == pid:
            time.sleep(1.0)                 # ... and sets the exit code late
        return got

    pool = pool_mod._new_pool(2)
    pool.submit(_sleep_then_return, 60.0)
    procs = list(pool._processes.values())
    monkeypatch.setattr(os, "waitpid", waitpid)
    pool_mod._kill_pool(pool)
    assert [p.exitcode for p in procs] == [-signal.SIGKILL] * 2
    assert not [c for c in multiprocessing.active_children() if c.is_alive()]


MATH_MORE = [
    # name, prediction, gold, correct
    ("no_prediction", None, r"\text{None}", False),
    ("empty_prediction", "", "5", False),
    ("three_letter_anagram", "abc", "cab", False),          # guard 7 from 3 letters: not a product a*b*c
    ("two_letter_product_commutes", "ab", "ba", True),      # under 3 letters, unwrapped: symbols, not text
    ("text_label_with_period", "C.", r"\text{(C)}", True),
    ("mathrm_capital_unwrapped", r"\frac{1}{\mathrm{E}}", "E^{-1}", True),
]


@pytest.mark.parametrize("name,pred,gold,correct", MATH_MORE, ids=[c[0] for c in MATH_MORE])
def test_math_equivalence_more(name, pred, gold, correct):
    assert math_equal(pred, gold) is correct


def test_delimiters_and_boxes_around_a_value():
    from harness.evaluation.grading.equivalence import choice_letter

    assert [choice_letter(s) for s in ("$$B$$", "$B$", r"\(B\)", r"\[B\]")] == ["B"] * 4
    assert [to_int(s) for s in (r"\boxed{25}", r"\boxed{1} then \boxed{25}", "x = 5$")] == [25, 25, 5]


@pytest.mark.parametrize("answer", [r"\frac12", r"\frac1{2}", r"\frac{1}2", r"\frac 1 2"], ids=["digits", "digit_brace", "brace_digit", "spaced"])
def test_short_fractions_normalised(answer):
    from harness.evaluation.grading.equivalence import normalize_answer

    assert normalize_answer(answer) == r"\frac{1}{2}"


def _pid_and_sigint():
    import os
    import signal

    return os.getpid(), signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def _ping_fails():
    raise OSError("cannot start")


@pytest.mark.parametrize("n,workers,in_pool", [(8, 1, False), (7, 2, False), (8, 2, True)])
def test_pool_only_for_many_items_and_workers(n, workers, in_pool):
    import os

    out = map_with_timeout(_pid_and_sigint, [()] * n, timeout_s=30.0, workers=workers)
    pids = {o.value[0] for o in out}
    assert (os.getpid() not in pids) is in_pool
    if in_pool:  # pool workers were initialised: Ctrl-C is the parent's business
        assert all(o.value[1] for o in out)


def test_pool_start_failure_is_reported(monkeypatch):
    from harness.evaluation.grading import pool

    monkeypatch.setattr(pool, "_ping", _ping_fails)
    message = ("grading worker processes failed to start (with the spawn start method the calling script "
               "needs an `if __name__ == '__main__':` guard)")
    with pytest.raises(RuntimeError, match="^" + re.escape(message) + "$"):
        map_with_timeout(_sleep_then_return, [(0.0,)] * 8, timeout_s=5.0, workers=2)


@pytest.mark.parametrize("timeout_s", [None, 0])
def test_pool_without_a_limit(timeout_s):
    # None or 0: no per-item deadline (as in call_with_timeout), not "everything times out".
    out = map_with_timeout(_sleep_then_return, [(0.05,)] * 8, timeout_s=timeout_s, workers=2)
    assert [o.value for o in out] == [0.05] * 8 and all(o.ok for o in out)


def test_queued_item_clock_starts_when_it_runs():
    # 1 s items under a 1.6 s limit on 2 workers: never more items in flight than workers, so no item
    # spends its time limit waiting behind another one.
    out = map_with_timeout(_sleep_then_return, [(1.0,)] * 8, timeout_s=1.6, workers=2)
    assert [o.ok for o in out] == [True] * 8
