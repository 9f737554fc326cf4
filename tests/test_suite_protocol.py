"""The paper suite's protocol: the base row by plain generation, s1's suite-wide "auto" cap, the
step-matched SFT control paired against iw-SFT, and the deviations that say all of it."""

import pytest

from harness.core.errors import UserError
from harness.paper.evaluations import Evaluations
from harness.paper.suite import load_suite


def test_paper_suite_declares_its_protocol_and_controls():
    s = load_suite("paper")
    assert s.base_protocol == "plain" and s.auto_cap_scope == "suite"
    assert ["sft-matched", "iw-sft"] in s.paired and ["s1.1-sft", "iw-sft"] in s.paired
    from harness.training.config import load_recipe

    iw, ctl, s11 = (load_recipe(s.recipe_path(n)) for n in ("iw-sft", "sft-matched", "s1.1-sft"))
    assert ctl.weighting == "sft" and iw.weighting == "iw-sft"
    same = ("global_batch_size", "block_size", "num_epochs", "max_steps", "learning_rate", "micro_batch_size", "seed")
    assert all(getattr(ctl, k) == getattr(iw, k) for k in same)
    assert (s11.global_batch_size, s11.block_size) == (16, 20000)      # the paper's comparison: half the steps
    t = load_suite("tiny")
    assert ["sft-matched", "iw-sft"] in t.paired and "arith2" in t.benchmarks
    tiw, tctl, ts11 = (load_recipe(t.recipe_path(n)) for n in ("iw-sft", "sft-matched", "s1.1-sft"))
    assert all(getattr(tctl, k) == getattr(tiw, k) for k in same) and tctl.weighting == "sft"
    assert ts11.global_batch_size == 2 * tiw.global_batch_size


def test_base_row_plain_and_suite_wide_auto_cap(tmp_path):
    s = load_suite("tiny")
    s.settings.thinking_budget, s.auto_cap_scope = "auto", "suite"
    s.benchmarks = {"arith": None, "math500": 3, "aime24": 2}
    with Evaluations(s) as ev:
        plain = ev.config("smollm2-135m", "arith", 3, protocol="plain")
        assert plain.delimiters == "plain" and plain.thinking_budget is None and plain.wait == 0
        assert plain.longest_prompt is None
        s1 = ev.config("smollm2-135m", "arith", 3)
        from harness.evaluation.benchmarks import load_benchmark

        eng = ev._engine_for(s1)
        per = {b: max(len(eng.prompt_ids(p, s1)) for p in load_benchmark(b)) for b in s.benchmarks}
        assert s1.delimiters == "s1" and s1.longest_prompt == max(per.values()) > per["arith"]
        s.auto_cap_scope = "benchmark"
        assert Evaluations(s).config("smollm2-135m", "arith", 3).longest_prompt is None


def test_bad_suite_protocol_keys(tmp_path):
    bad = tmp_path / "x.yaml"
    text = (load_suite("tiny").path.read_text() + "\nbase_protocol: chat\n")
    bad.write_text(text)
    with pytest.raises(UserError, match="base_protocol 'chat' is not one of plain, s1"):
        load_suite(str(bad))


def test_deviations_name_the_protocol_and_the_controls():
    from harness.paper.pipeline import deviations
    from harness.training.config import load_recipe

    s = load_suite("paper")
    trained = {n: {**load_recipe(s.recipe_path(n)).to_dict(), "data_summary": {"examples": 1000}} for n in s.recipes}
    text = "\n".join(deviations(s, {"base": [{}]}, trained))
    assert "Base row: plain generation" in text
    assert "longest prompt over all" in text
    assert "iw-sft, iw-sft-per-step take 2x as many AdamW steps (625 against 313)" in text and "sft-matched is SFT" in text
    assert "s1.1 315" in text and "s1.1-sft takes 313 steps here, where transformers' Trainer would take 315" in text
    # No Wait: s1's loop makes one capped round, so it cannot exceed the cap either.
    assert "s1's loop" not in text and "could exceed" not in text
    t = load_suite("tiny")
    trained = {n: load_recipe(t.recipe_path(n)).to_dict() for n in t.recipes}
    text = "\n".join(deviations(t, {"base": [{}]}, trained))
    assert "Base row: evaluated with the fine-tunes' s1 prompt" in text
    assert "pools the response tokens of" in text       # micro-batch 4 loss normalisation vs the paper's 1
    t.settings.wait = 2
    assert "s1's loop, which resubmits each 'Wait' round with the full cap, could exceed it" in "\n".join(
        deviations(t, {"base": [{}]}, trained))
    assert "4-bit GGUF SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1)" in text and "Q4_1" not in "\n".join(
        deviations(s, {"base": [{}]}, {}))              # the paper preset's Qwen2.5-32B is not quantised


def test_deviations_name_the_backend_and_its_libraries_once():
    from types import SimpleNamespace

    from harness.paper.pipeline import deviations

    t = load_suite("tiny")
    run = SimpleNamespace(metrics={"backend": {"kind": "vllm", "name": "vllm", "version": "vllm 0.32.0"}}, scores={})
    line = next(l for l in deviations(t, {"iw-sft": [{"arith": run}]}, {}) if l.startswith("Generation backend"))
    assert line.startswith("Generation backend: vllm (vllm 0.32.0); dtype ")
    line = next(l for l in deviations(t, {"base": [{}]}, {}) if l.startswith("Generation backend"))
    assert line.startswith(f"Generation backend: {t.settings.backend}; dtype ")    # no run yet: the suite's choice


def test_objective_deviation_names_what_each_recipe_trained():
    from harness.paper.pipeline import objective_note

    text = objective_note({"a": {"weighting": "iw-sft", "q_source": "lag0"},
                           "b": {"weighting": "iw-sft-paper", "q_source": "ema", "weighting_overrides": {"w_clip": [0, 8]}},
                           "c": {"weighting": "sft"}})
    assert text == ("Objective: a = iw-sft (the released code: w = clamp(exp(mean log-ratio), 0, 16)), q = lag0; "
                    'b = iw-sft-paper with {"w_clip": [0, 8]} (the paper\'s text: w = exp(sum of 0.1 x clipped log-ratios)), '
                    "q = ema; c = sft (plain SFT, w = 1).")
    assert objective_note({"a": {"weighting": "per-step", "q_source": "lag0"}}).endswith(
        "The paper's text (0.1 x clipped log-ratios, lagged q) is the iw-sft-paper preset, not run here.")


def test_data_notes_say_whether_a_curated_set_is_d_plus(tmp_path):
    import json

    from harness.paper.pipeline import data_notes

    def write(name, rows):
        f = tmp_path / name
        f.write_text("".join(json.dumps({"source_model": "m", "task": "arith", **r}) + "\n" for r in rows))
        return str(f)

    natural = {"temperature": 1.0, "hit_cap": False, "answer_finish": "stop"}
    dplus = write("d.jsonl", [{**natural, "problem_id": "p1"}, {**natural, "problem_id": "p1"}, {**natural, "problem_id": "p2"}])
    forced = write("f.jsonl", [{**natural, "problem_id": "p1"}, {**natural, "problem_id": "p2", "hit_cap": True}])
    hot = write("t.jsonl", [{**natural, "problem_id": "p1", "temperature": 0.8}])
    plain = tmp_path / "s1k.jsonl"
    plain.write_text(json.dumps({"question": "q", "deepseek_attempt": "a"}) + "\n")      # not written by iwsft curate
    notes = data_notes({"a": {"dataset": dplus}, "b": {"dataset": dplus}, "c": {"dataset": forced},
                        "d": {"dataset": hot}, "e": {"dataset": str(plain)}, "f": {"dataset": "org/hub-name"}})
    assert notes[0] == ("Training data of a, b: 3 graded-correct samples of m on 2 arith training problems at temperature 1; "
                        "thinking and answer ended by themselves (only the format's delimiter inserted, masked): D+ as "
                        "the paper defines it.")
    assert notes[1] == ("Training data of c: 2 graded-correct samples of m on 2 arith training problems at "
                        "temperature 1; not D+ as the paper defines it (unforced samples of pi_ref itself at temperature 1): "
                        "1 of them answered after a thinking cut at the cap (the forced close is masked).")
    assert "temperature 0.8; not D+" in notes[2] and "sampled at temperature 0.8, a sharpened pi_ref" in notes[2]
    assert "thinking cut" not in notes[2]
    assert len(notes) == 3
