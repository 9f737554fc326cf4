"""Issue 25's patterns (a careful reader's verdict on real model output) and issue 30's plain
responses: each accepted form with the near misses that must stay wrong. Cases written for this
project (no GPQA question text)."""

from __future__ import annotations

import time

import pytest

from harness.evaluation.grading import GRADER_VERSION, grade_many, grade_one
from harness.evaluation.grading.extract import choice_candidates, extract_answer, extract_choice

T = "<|im_start|>think\n"
A = "\n<|im_start|>answer\n"


def s1(section: str) -> str:
    return T + "working it out" + A + section


CASES = [
    # name, benchmark, answer section, gold, correct
    # 1. integer answers with a percent sign or a unit
    ("int_percent_boxed", "aime24", r"\boxed{20\%}", "20", True),
    ("int_weeks", "aime24", "Answer: 10 weeks", "10", True),
    ("int_cm2", "aime24", r"\boxed{10 \text{ cm}^2}", "10", True),
    ("int_cm2_plain_caret", "arith", "Answer: 10 cm^2", "10", True),
    ("near_int_percent_other_value", "aime24", r"\boxed{20\%}", "2", False),
    ("near_int_unit_other_quantity", "aime24", "Answer: 120 minutes", "2", False),
    ("near_int_multiplier_word", "aime24", "Answer: 10 thousand", "10", False),
    ("near_int_dozen", "aime24", r"\boxed{3 \text{ dozen}}", "3", False),
    ("near_math_multiplier_word", "math500", r"\boxed{10\text{ thousand}}", "10", False),
    ("near_int_percent_of_decimal", "aime24", r"\boxed{0.2\%}", "20", False),
    # 2. an answer split over several boxes
    ("boxes_joined", "math500", r"The solutions are \boxed{(1, 2)}, \boxed{(2, 1)}", "(1,2),(2,1)", True),
    ("boxes_joined_and", "math500", r"$\boxed{(2, 2)} \quad \text{and} \quad \boxed{(6, 2)}$", "(2, 2), (6, 2)", True),
    ("near_box_step_not_part", "math500", r"First \boxed{3} is a step. Hence \boxed{5}", "3, 5", False),
    ("near_box_step_last_wins", "math500", r"First \boxed{3} is a step. Hence \boxed{5}", "5", True),
    ("near_boxes_missing_one", "math500", r"\boxed{(1, 2)}, \boxed{(2, 1)}", "(1,2),(2,1),(3,3)", False),
    ("near_boxes_paragraph_apart", "math500", "\\boxed{3}\n\nOn reflection:\n\n\\boxed{4}", "4", True),
    # 3. a labelled gold against the bare value, and the converse
    ("label_gold_pair", "math500", r"\boxed{(3,2)}", "(p,q)=(3,2)", True),
    ("label_gold_abs", "math500", r"\boxed{1}", "|AB|=1", True),
    ("label_gold_ratio", "math500", r"\boxed{\frac{1}{3}}", r"\frac{NO}{BO}=\frac{1}{3}", True),
    ("label_pred", "math500", r"\boxed{(p,q)=(3,2)}", "(3,2)", True),
    ("near_label_other_value", "math500", r"\boxed{(2,3)}", "(p,q)=(3,2)", False),
    ("near_label_other_value_pred", "math500", r"\boxed{|AB| = 2}", "1", False),
    ("near_label_is_a_line", "math500", r"\boxed{2x+1}", "y=2x+1", True),
    ("near_equation_eq_0", "math500", r"\boxed{2x+3=0}", "0", False),
    # 4. "Answer" without a colon, then math
    ("answer_no_colon_dollars", "math500", "Answer $ 9 $", "9", True),
    ("answer_no_colon_display", "math500", "Answer \\[ 9 \\]", "9", True),
    ("near_answer_no_colon_wrong", "math500", "Answer $ 8 $", "9", False),
    ("near_answer_math_then_prose", "math500", "The answer $x$ must be positive, so x = 9", "9", True),
    # 5. Final Answer: a sentence that ends in the value
    ("final_answer_sentence", "math500", "Final Answer: The largest $n$ is 34.", "34", True),
    ("final_answer_sentence_hope", "math500", "Final Answer: The final answer is 10455. I hope it is correct.", "10455", True),
    ("final_answer_sentence_int", "aime24", "Final Answer: The total number of ways is 25.", "25", True),
    ("final_answer_sentence_one_number", "aime24", "Final Answer: She needs 25 more stamps to finish.", "25", True),
    ("near_final_answer_not", "aime24", "Final Answer: The total is not 25.", "25", False),
    ("near_final_answer_two_numbers", "aime24", "Final Answer: She buys 25 stamps for 3 dollars each.", "25", False),
    ("near_final_answer_two_values", "aime24", "Final Answer: x = 3 and y = 25", "25", False),
    # 6. an intermediate box early, a later explicit final answer
    ("later_final_answer_beats_box", "aime24", "so \\boxed{255} is the interest.\nFinal Answer: 10455", "10455", True),
    ("near_box_then_prose_answer", "aime24", "\\boxed{255}\nI checked that the answer is correct.", "255", True),
    ("near_later_answer_wrong", "aime24", "\\boxed{10455}\nAnswer: 255", "10455", False),
    # 7. relations the other way round, the same line in another form, f(x) against y
    ("relation_flipped", "math500", r"\boxed{5 \geq x}", r"x \leq 5", True),
    ("relation_negated_sides", "math500", r"\boxed{-x > -1}", "x < 1", True),
    ("line_other_form", "math500", r"\boxed{y=-\frac{1}{2}x+\frac{3}{4}}", "2x+4y-3=0", True),
    ("function_vs_y", "math500", r"\boxed{f(x) = x^2 + 1}", "y = x^2 + 1", True),
    ("line_standard_form", "math500", r"\boxed{3x - y + 2 = 0}", "y = 3x + 2", True),
    ("near_line_standard_form_shifted", "math500", r"\boxed{3x - y + 3 = 0}", "y = 3x + 2", False),
    ("near_relation_wrong_direction", "math500", r"\boxed{5 \leq x}", r"x \leq 5", False),
    ("near_relation_strictness", "math500", r"\boxed{x < 5}", r"x \leq 5", False),
    ("near_other_line", "math500", r"\boxed{y = 2x + 1}", "2x - y + 2 = 0", False),
    ("near_function_other", "math500", r"\boxed{f(x) = x^2}", "y = x^2 + 1", False),
    # 9. times, mixed numbers, identities with degrees
    ("time_24h_vs_pm", "math500", r"\boxed{20:34}", r"08:34 \text{ P.M.}", True),
    ("time_pm_vs_24h", "math500", r"\boxed{8:34 PM}", "20:34", True),
    ("mixed_number", "math500", r"\boxed{1 1/2}", r"\frac{3}{2}", True),
    ("trig_degrees", "math500", r"\boxed{\sin(90^\circ - x)}", r"\cos x", True),
    ("mixed_number_with_unit", "math500", "Answer: 1 1/2 cups", r"\frac{3}{2}", True),
    ("near_time_am", "math500", r"\boxed{8:34 AM}", "20:34", False),
    ("near_ratio_is_no_time", "math500", r"\boxed{11:21}", "11:12", False),
    ("near_mixed_number", "math500", r"\boxed{1 1/2}", r"\frac{1}{2}", False),
    ("near_trig_degrees", "math500", r"\boxed{\sin(90^\circ - x)}", r"\sin x", False),
]


@pytest.mark.parametrize("name,bench,section,gold,correct", CASES, ids=[c[0] for c in CASES])
def test_issue25_patterns_and_near_misses(name, bench, section, gold, correct):
    assert grade_one(bench, s1(section), gold).correct is correct
    assert grade_one(bench, section, gold, answer_delimiter="").correct is correct  # plain format


CHOICE = [
    # 8. GPQA letters without an "Answer:" anchor; name, answer section, letter (None = unextracted)
    ("bare_letter", "D", "D"),
    ("bold_letter", "**C**", "C"),
    ("paren_letter", "(D)", "D"),
    ("letter_then_option_text", "D. 42 nm, the longer wavelength", "D"),
    ("final_answer_dash", "After the derivation:\nFinal answer - B", "B"),
    ("answer_quoted", 'Answer: "C"', "C"),
    ("answer_is_for_sure", "the answer is for sure D, it can't be A or B", "D"),
    ("correct_option_is", "The correct option is B.", "B"),
    ("option_leading", "Option C", "C"),
    ("near_option_ruled_out", "Option A is wrong.", None),
    ("letter_is_correct", "After comparing them, B is correct.", "B"),
    ("near_letter_is_not_correct", "B is not correct", None),
    ("near_letters_listed", "A or B", None),
    ("near_letter_negated", "not D", None),
    ("near_between", "between B and C", None),
    ("near_answer_hedged", "The answer is A or B", None),
    ("near_answer_not", "The answer is not D", None),
    ("near_article_a", "A good approach is to compare energies", None),
    ("near_paren_letters_hedged", "Either (A) or (B)", None),
]


@pytest.mark.parametrize("name,section,letter", CHOICE, ids=[c[0] for c in CHOICE])
def test_gpqa_letters_without_anchor(name, section, letter):
    assert extract_choice(s1(section)) == letter
    assert extract_choice(section, "") == letter
    for gold in "ABCD":
        assert grade_one("gpqa_diamond", s1(section), gold).correct is (gold == letter)


def test_gpqa_candidates_count_what_the_grader_chose_between():
    assert choice_candidates(s1("Answer: A. On reflection \\boxed{C}")) == ["A", "C"]
    assert choice_candidates(s1("The answer is A or B")) == ["A", "B"]
    assert choice_candidates(s1("\\boxed{C}")) == ["C"]
    assert choice_candidates(s1("no letter here")) == []


PLAIN = [
    # issue 30: --thinking-format plain reads the final stated value, as lm-eval / lighteval do
    ("sum_line", "8 + 2 = 10.", "10", True),
    ("work_then_sum", "Eight apples and two more.\n8 + 2 = 10.", "10", True),
    ("prose_final_value", "We add the two numbers. So the total is 10.", "10", True),
    ("prose_final_math", "Adding them gives\n$$10$$", "10", True),
    ("final_value_with_unit", "She walks 3 km a day for 4 days, so she walks 12 km.", "12", True),
    ("gsm8k_hashes", "She has 8 apples and buys 2 more.\n#### 10", "10", True),
    ("near_wrong_final_value", "8 + 2 = 11.", "10", False),
    ("near_gsm8k_hashes_other", "8 + 2 = 10\n#### 12", "10", False),
    ("near_mentioned_not_stated", "I am not sure about 10", "10", False),
    ("near_negated", "The total is not 10.", "10", False),
    ("near_hedged", "It could be 10 or maybe 12.", "10", False),
    ("near_could_be", "The total could be 10.", "10", False),
    ("near_equation_zero", "2x + 3 = 0", "0", False),
    ("near_intermediate_value", "8 + 2 = 10, and 10 times 3 is 30.", "10", False),
]


@pytest.mark.parametrize("name,response,gold,correct", PLAIN, ids=[c[0] for c in PLAIN])
def test_plain_response_final_stated_value(name, response, gold, correct):
    for bench in ("arith", "math500"):
        assert grade_one(bench, response, gold, answer_delimiter="").correct is correct


def test_plain_response_never_reads_thinking_text():
    # a plain row has no thinking phase; with the s1 delimiter a response WITHOUT an answer section
    # is thinking text and never gives a bare value
    assert extract_answer(T + "8 + 2 = 10.") is None
    assert extract_answer("8 + 2 = 10.", "") == "10"


def test_grader_version_is_a_string():
    assert isinstance(GRADER_VERSION, str) and GRADER_VERSION != "1"


def test_new_patterns_keep_the_per_response_time_bound():
    # pathological responses against the new regexes: many boxes joined by commas, many "Answer"
    # words before unclosed math, long sentences without a value, many letters
    bad = [
        ", ".join([r"\boxed{1}"] * 5000),
        "Answer $ " * 20000,
        "the value is " * 20000 + "x",
        "A or " * 20000,
        "=" * 50000 + " 5",
        ("$x$ " * 20000) + ".",
        "Answer $ 9 $ x " * 20000,  # each "Answer $" closes, none ends its line
        "Answer \\( 9 x " * 20000,  # inline math that never closes
        "so it is \\( " * 20000,
        "\\[ " * 50000,
    ]
    t0 = time.monotonic()
    for b in bad:
        for bench in ("math500", "gpqa_diamond", "aime24"):
            grade_many(bench, [(b, "1" if bench != "gpqa_diamond" else "A")], workers=1, timeout_s=5.0,
                       answer_delimiter="")
    assert time.monotonic() - t0 < 20


def test_metrics_count_unread_and_multiple_letters():
    from harness.evaluation.metrics import compute_metrics

    rows = {("p1", 0): {"correct": False, "extracted": None, "candidate_letters": ["A", "B"]},
            ("p2", 0): {"correct": True, "extracted": "C", "candidate_letters": ["A", "C"]},
            ("p3", 0): {"correct": True, "extracted": "D", "candidate_letters": ["D"]}}
    m = compute_metrics(["p1", "p2", "p3"], rows, 1)
    assert (m["unextracted"], m["multiple_letters"]) == (1, 2)
    rows = {("p1", 0): {"correct": True, "extracted": "5"}}
    assert compute_metrics(["p1"], rows, 1)["multiple_letters"] is None  # not a choice benchmark


def test_eval_run_records_candidate_letters_and_counts_them(tmp_path, monkeypatch):
    """End to end through the runner (no model): a choice benchmark's rows keep the letters each
    response stated, and metrics.json counts unread responses and those with several letters."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    import harness.evaluation.runner as ev
    from harness.evaluation.benchmarks import _core
    from harness.evaluation.config import EvalConfig
    from test_evaluate import FakeEngine

    _core.names()  # discover the built-in benchmarks first: the copy below must hold them
    monkeypatch.setattr(_core, "_REGISTRY", dict(_core._REGISTRY))  # the file's benchmark stays in this test

    answers = iter(["Answer: A or B", "Answer: A. On reflection \\boxed{B}", "\\boxed{B}"])

    class LetterFake(FakeEngine):
        def generate(self, cfg, prompts, budget, seeds, on_result):
            for j, _ in enumerate(seeds):
                on_result(j, SimpleNamespace(text="hmm" + A + next(answers), thinking_tokens=5, answer_tokens=3,
                                             finish_reason="stop", hit_cap=False, num_waits_used=0,
                                             thinking_cap=budget))

    quiz = tmp_path / "quiz.yaml"
    quiz.write_text("grader: choice\nproblems:\n" + "".join(
        f"  - {{id: q{i}, question: 'Which one {i}?', options: ['1', '2'], gold: B}}\n" for i in range(3)))
    monkeypatch.setattr(ev, "Engine", LetterFake)
    cfg = EvalConfig(model="fake", benchmarks=["quiz"], benchmark_files={"quiz": str(quiz)}, out=str(tmp_path / "out"),
                     progress=False, summary=False, batch_size=1)
    run_dir = Path(ev.run_eval(cfg)["quiz"]["run_dir"])
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert sorted(len(r["candidate_letters"]) for r in rows) == [1, 2, 2]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["unextracted"], metrics["multiple_letters"], metrics["correct"]) == (1, 2, 2)
