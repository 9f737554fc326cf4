"""One evaluation config type: EvalConfig's fields are the `iwsft eval` flags and the suites' settings
(no hand-synced copy to forget), and one validation speaks for both."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from harness.core.errors import UserError
from harness.evaluation.config import EvalConfig


def _eval_parser():
    from harness.commands import eval as eval_cmd

    p = argparse.ArgumentParser()
    eval_cmd.add_arguments(p)
    return p, eval_cmd


def test_every_field_is_a_flag_or_derived():
    p, eval_cmd = _eval_parser()
    dests = {a.dest for a in p._actions}
    missing = {f.name for f in fields(EvalConfig)} - dests - eval_cmd.DERIVED
    assert not missing, f"EvalConfig fields no flag sets: {missing}"
    assert not eval_cmd.DERIVED - {f.name for f in fields(EvalConfig)}, "DERIVED names a field that does not exist"


def test_flags_pass_through_to_the_config():
    p, eval_cmd = _eval_parser()
    args = p.parse_args(["--model", "smollm2-135m", "--benchmarks", "arith", "--top-k", "5", "--min-p", "0.1",
                         "--temperature", "0.7", "--samples", "2", "--thinking-format", "think-tags", "--wait", "2",
                         "--total-budget", "900", "--shard", "2/3", "--no-prefix-caching", "--system", "be brief"])
    cfg = eval_cmd.config_from_args(args)
    assert (cfg.top_k, cfg.min_p, cfg.temperature, cfg.samples, cfg.delimiters, cfg.wait) == (5, 0.1, 0.7, 2, "think-tags", 2)
    assert (cfg.max_new_tokens, cfg.shard, cfg.enable_prefix_caching, cfg.system) == (900, (2, 3), False, "be brief")


def test_every_field_is_a_suite_setting_or_set_per_run():
    from harness.paper.suite import ALIASES, PER_RUN, SETTINGS

    names = {f.name for f in fields(EvalConfig)}
    assert SETTINGS | PER_RUN == names and not SETTINGS & PER_RUN
    assert set(ALIASES.values()) <= SETTINGS


def _suite(tmp_path, extra: str):
    from harness.paper.suite import load_suite, suite_path

    p = tmp_path / "s.yaml"
    p.write_text(suite_path("tiny").read_text() + extra)
    return load_suite(str(p))


def test_suite_settings_are_the_eval_config(tmp_path):
    s = _suite(tmp_path, "top_k: 20\nmin_p: 0.05\nthinking_format: think-tags\nbudget_mode: s1-compat\nsystem: hi\n")
    cfg = s.config("some/checkpoint", benchmarks=["arith"], limit=3)
    assert (cfg.top_k, cfg.min_p, cfg.delimiters, cfg.budget_mode, cfg.system) == (20, 0.05, "think-tags", "s1-compat", "hi")
    assert (cfg.model, cfg.benchmarks, cfg.limit, cfg.thinking_budget, cfg.max_new_tokens) == ("some/checkpoint", ["arith"], 3, 48, 512)
    assert s.settings.model == s.base_model and s.settings.top_k == 20    # the suite's copy is untouched


@pytest.mark.parametrize("extra,message", [
    ("top_p: 2\n", r"s\.yaml: top_p must be in \(0, 1\]"),
    ("answer_budget: 9999\n", r"answer_budget 9999 exceeds total_budget 512"),
    ("thinking_format: think-tag\n", r"s\.yaml: .*think-tag"),
    ("tensor_parallel_size: 0\n", r"tensor_parallel_size must be >= 1"),
    ("limit: 3\n", r"unknown key 'limit'"),                  # set per run, not by a suite
])
def test_bad_suite_setting_is_one_line_naming_the_key(tmp_path, extra, message):
    with pytest.raises(UserError, match=message):
        _suite(tmp_path, extra)
