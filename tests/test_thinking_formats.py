"""Thinking formats (s1, think-tags, qwen3, plain) on tokenizers carrying the real Qwen3 and
DeepSeek-R1-Distill chat templates (tests/chat_template_fixtures.py): prompts, budget forcing against
a scripted backend, extraction, bad input, and one `iwsft eval` per format on a tiny random model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chat_template_fixtures import TEMPLATES, qwen3_tokenizer, r1_tokenizer, template_text
from harness.cli import main
from harness.core.errors import UserError
from harness.evaluation.generation.base import Completion, GenParams, decode, per_prompt_params
from harness.evaluation.generation.budget import BudgetConfig, generate_with_budget
from harness.evaluation.generation.formats import check_template, resolve_format
from harness.evaluation.generation.prompts import build_prompt_ids, delimiter_ids, encode, prompt_text
from harness.evaluation.grading import grade_one

Q = "What is 2 + 3?"


@pytest.fixture(scope="module")
def toks(smollm2_tokenizer, tmp_path_factory):
    d = tmp_path_factory.mktemp("toks")
    return {"s1": smollm2_tokenizer, "think-tags": r1_tokenizer(smollm2_tokenizer, d / "r1"),
            "qwen3": qwen3_tokenizer(smollm2_tokenizer, d / "qwen3")}


def test_fixtures_are_trls_copies_of_the_shipped_templates():
    trl = pytest.importorskip("trl")
    shipped = Path(trl.__file__).parent / "chat_templates"
    for name in ("qwen3", "deepseek_r1_distill"):
        assert template_text(name) == (shipped / f"{name}.jinja").read_text(encoding="utf-8"), name
    assert (TEMPLATES / "SOURCES.md").is_file()


# ------------------------------------------------------------------------------ prompts

def test_prompts_render_as_each_format_says(toks):
    q, r = toks["qwen3"], toks["think-tags"]
    # qwen3: ChatML turn, no default system prompt, then the forced "<think>\n"
    assert prompt_text(q, Q, resolve_format("qwen3")) == f"<|im_start|>user\n{Q}<|im_end|>\n<|im_start|>assistant\n<think>\n"
    on = {"enable_thinking": True}
    assert prompt_text(q, Q, resolve_format("qwen3", on), chat_template_kwargs=on) == prompt_text(q, Q, resolve_format("qwen3"))
    # enable_thinking=false: the template closes an empty think block itself; nothing is appended
    off = {"enable_thinking": False}
    fmt_off = resolve_format("qwen3", off)
    assert not fmt_off.has_thinking
    assert prompt_text(q, Q, fmt_off, chat_template_kwargs=off).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # think-tags on R1's template: its generation prompt already opens <think>; never doubled
    text = prompt_text(r, Q, resolve_format("think-tags"))
    assert text == f"<｜begin▁of▁sentence｜><｜User｜>{Q}<｜Assistant｜><think>\n"
    ids = build_prompt_ids(r, Q, resolve_format("think-tags"))
    assert ids == r.encode(text, add_special_tokens=False) and ids.count(r.convert_tokens_to_ids("<think>")) == 1
    # s1 unchanged: "<|im_start|>think" after the generation prompt
    assert prompt_text(toks["s1"], Q, resolve_format("s1")).endswith("<|im_start|>assistant\n<|im_start|>think")


def test_existing_formats_keep_their_delimiters():
    """Run-folder keys hash asdict(Delimiters): the existing presets must not change."""
    from dataclasses import asdict

    assert asdict(resolve_format("s1")) == {
        "name": "s1", "think_prefix": "<|im_start|>think", "answer_prefix": "<|im_start|>answer",
        "thinking_stops": ("<|im_start|>", "<|im_end|>"), "end_of_turn": "<|im_end|>",
        "final_answer_close": "\n<|im_start|>answer\nFinal Answer:", "wait": "Wait",
        "close_skips_newline_after_newline": True}
    assert resolve_format("s1", {"enable_thinking": True}) is resolve_format("s1")


# ------------------------------------------------------------------------------ budget forcing

@dataclass
class Scripted:
    """Thinking rounds play `think[i]`, the answer phase plays `answer` (recognised by the prompt ending
    with the format's answer prefix or forced close); stops and EOS as the Backend contract says."""

    tokenizer: object
    fmt: object
    think: list
    answer: list
    calls: list = field(default_factory=list)
    name: str = "scripted"

    def version(self):
        return "0"

    def generate(self, prompts, params):
        ids = delimiter_ids(self.tokenizer, self.fmt)
        outs = []
        for p, gp in zip(prompts, per_prompt_params(params, len(prompts))):
            self.calls.append((list(p), gp))
            ends = [e for e in (ids.answer_prefix, ids.final_answer_close_no_newline) if e]
            in_answer = not self.fmt.has_thinking or any(p[-len(e):] == e for e in ends)
            stream = self.answer if in_answer else self.think.pop(0)
            outs.append(self._play(stream, gp))
        return outs

    def _play(self, stream, gp: GenParams):
        stops = set(gp.stop_token_ids) | {self.tokenizer.eos_token_id}
        out = []
        for t in stream:
            if len(out) >= gp.max_new_tokens:
                return Completion(out, decode(self.tokenizer, out), "length")
            if t in stops:
                return Completion(out, decode(self.tokenizer, out), "stop", t)
            out.append(t)
        return Completion(out, decode(self.tokenizer, out), "length" if len(out) >= gp.max_new_tokens else "stop")


def _ids(tok, text):
    return encode(tok, text)


@pytest.mark.parametrize("name,close", [
    ("s1", "\n<|im_start|>answer\nFinal Answer:"),
    ("think-tags", "\n</think>\n\nFinal Answer:"),
    ("qwen3", "\n</think>\n\nFinal Answer:"),
])
def test_cap_forces_the_formats_close_and_extraction_ignores_thinking(toks, name, close):
    tok, fmt = toks[name], resolve_format(name)
    thinking = _ids(tok, r" so \boxed{7} maybe and more and more words here")
    answer = _ids(tok, r" \boxed{5}") + [tok.eos_token_id]
    cap = 6
    backend = Scripted(tok, fmt, think=[thinking], answer=answer)
    (res,) = generate_with_budget(backend, tok, [build_prompt_ids(tok, Q, fmt)],
                                  BudgetConfig(thinking_budget=cap, total_budget=512), fmt)
    assert res.hit_cap and res.thinking_tokens == cap and res.thinking_text == decode(tok, thinking[:cap])
    assert res.close == close and res.text == res.thinking_text + close + r" \boxed{5}"
    assert res.answer_tokens == len(answer) - 1                          # end of turn excluded
    # the thinking's \boxed{7} is cut by the cap here; put it back to show the answer section wins
    delim = fmt.answer_prefix.strip()
    assert grade_one("arith", res.text, "5", answer_delimiter=delim).extracted == "5"
    full = decode(tok, thinking) + close + r" \boxed{5}"
    assert grade_one("arith", full, "5", answer_delimiter=delim).extracted == "5"
    # the thinking phase stops at the format's end of thinking
    stop_ids = backend.calls[0][1].stop_token_ids
    assert set(delimiter_ids(tok, fmt).thinking_stop_ids) <= set(stop_ids) and stop_ids


@pytest.mark.parametrize("name", ["think-tags", "qwen3"])
def test_natural_close_and_wait_replace_the_end_of_thinking(toks, name):
    tok, fmt = toks[name], resolve_format(name)
    end = tok.convert_tokens_to_ids("</think>")
    r1 = _ids(tok, " one two") + [end, 99, 99]
    r2 = _ids(tok, r" three \boxed{9}") + [end]
    answer = _ids(tok, r"\boxed{4}") + [tok.eos_token_id]
    backend = Scripted(tok, fmt, think=[r1, r2], answer=answer)
    (res,) = generate_with_budget(backend, tok, [build_prompt_ids(tok, Q, fmt)],
                                  BudgetConfig(thinking_budget=100, num_wait=1, total_budget=512), fmt)
    wait = _ids(tok, "Wait")
    # the first "</think>" was dropped and replaced by Wait; the second closed naturally
    assert not res.hit_cap and res.num_waits_used == 1 and res.close == "</think>\n\n"
    assert res.thinking_tokens == 2 + len(wait) + (len(r2) - 1)
    assert res.text.count("</think>") == 1 and "Wait" in res.thinking_text and "</think>" not in res.thinking_text
    assert grade_one("arith", res.text, "4", answer_delimiter=fmt.answer_prefix.strip()).extracted == "4"
    # the second round continued after the Wait, with the dropped "</think>" nowhere in its prompt
    assert end not in backend.calls[1][0][-len(r1):] and backend.calls[1][0][-len(wait):] == wait


def test_thinking_never_closed_reads_explicit_answers_only():
    """A response whose thinking never closed (no budget forcing: lm-eval) has no answer section; as
    on the s1 path only explicit answers are read from the thinking, never a bare number."""
    for delim in ("<|im_start|>answer", "</think>"):
        assert grade_one("arith", "so it is 5 I think", "5", answer_delimiter=delim).extracted is None
        assert grade_one("arith", r"so \boxed{5}", "5", answer_delimiter=delim).extracted == "5"


def test_qwen3_thinking_off_generates_the_whole_answer(toks):
    tok = toks["qwen3"]
    kw = {"enable_thinking": False}
    fmt = resolve_format("qwen3", kw)
    answer = _ids(tok, " 5") + [tok.eos_token_id]
    backend = Scripted(tok, fmt, think=[], answer=answer)
    (res,) = generate_with_budget(backend, tok, [build_prompt_ids(tok, Q, fmt, chat_template_kwargs=kw)],
                                  BudgetConfig(thinking_budget="auto", total_budget=512), fmt)
    assert res.thinking_tokens == 0 and res.text == " 5" and res.close == ""
    assert backend.calls[0][1].stop_token_ids == (tok.eos_token_id,)
    assert grade_one("arith", res.text, "5", answer_delimiter=fmt.answer_prefix.strip()).correct


# ------------------------------------------------------------------------------ bad input

def test_template_ignoring_enable_thinking_is_refused(toks):
    with pytest.raises(UserError, match="renders the same with it true and false"):
        check_template(toks["think-tags"], "qwen3")
    with pytest.raises(UserError, match="enable_thinking needs a chat template"):
        check_template(toks["s1"], "s1", {"enable_thinking": True})
    check_template(toks["qwen3"], "qwen3")
    check_template(toks["think-tags"], "think-tags")           # nothing asked of the template


@pytest.mark.parametrize("fmt,kwargs", [("think-tags", {"enable_thinking": 1}), ("s1", {"enable_thinking": False}),
                                        ("nope", None)])
def test_bad_format_settings(fmt, kwargs):
    with pytest.raises(UserError):
        resolve_format(fmt, kwargs)


def _one_line(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err
    return err


@pytest.mark.parametrize("extra,fragment", [
    (["--delimiters", "r1"], "unknown delimiter preset 'r1'"),
    (["--thinking-format", "qwen3"], "or another --thinking-format (s1, think-tags)"),
    (["--chat-template-kwargs", '{"enable_thinking": true}'], "or drop enable_thinking from --chat-template-kwargs"),
    (["--chat-template-kwargs", "{enable_thinking: true}"], "--chat-template-kwargs is not JSON"),
    (["--chat-template-kwargs", "[1]"], "must be a JSON object"),
    (["--thinking-format", "s1", "--chat-template-kwargs", '{"enable_thinking": false}'], "fix: --thinking-format qwen3"),
])
def test_cli_bad_format_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, extra, fragment):
    """Refused from the tokenizer alone (no weights load), naming only the flags given."""
    import harness.evaluation.generation as generation

    def no_weights(*a, **k):
        raise AssertionError("the model was loaded before the format was checked")

    monkeypatch.setattr(generation, "make_backend", no_weights)
    out = tmp_path / "out"
    rc = main(["eval", "--model", "smollm2-135m", "--benchmarks", "arith", "--limit", "1", "--backend", "hf",
               "--out", str(out), "--no-progress", *extra])
    assert rc == 2
    err = _one_line(capsys, fragment)
    assert "--delimiters" in extra or "--delimiters" not in err, err     # a flag the user did not give
    assert "without enable_thinking" not in err, err
    assert not out.exists() or not any(out.rglob("*.jsonl"))


# ------------------------------------------------------------------------------ end to end

@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs", [("s1", None), ("think-tags", None), ("qwen3", None),
                                         ("qwen3", {"enable_thinking": False})])
def test_iwsft_eval_end_to_end_per_format(toks, tmp_path, capsys, name, kwargs):
    from tiny_models import tiny_random_model

    tok = toks[name]
    folder = tmp_path / "model"
    tiny_random_model(tok, hidden=32, layers=1, seed=3).save_pretrained(folder)
    tok.save_pretrained(folder)
    fmt = resolve_format(name, kwargs)
    cap = 8
    argv = ["eval", "--model", str(folder), "--benchmarks", "arith", "--limit", "2", "--backend", "hf",
            "--thinking-format", name, "--total-budget", "160", "--answer-budget", "6",
            "--out", str(tmp_path / "out"), "--no-progress"]
    argv += ["--chat-template-kwargs", json.dumps(kwargs)] if kwargs else ["--thinking-budget", str(cap)]
    assert main(argv) == 0, capsys.readouterr().err
    (run_dir,) = [p.parent for p in (tmp_path / "out").rglob("settings.json")]
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["prompt"]["delimiters"]["name"] == name
    assert settings["prompt"].get("chat_template_kwargs") == kwargs
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["answer_tokens"] <= 6
        if not fmt.has_thinking:
            assert row["thinking_tokens"] == 0 and not row["hit_cap"]
            continue
        assert 0 <= row["thinking_tokens"] <= cap
        end = fmt.answer_prefix.strip()
        closes = ("\n" + end, end) if row["hit_cap"] else (end,)
        assert any(c in row["response"] for c in closes), row["response"]
        if row["hit_cap"]:
            assert "Final Answer:" in row["response"].rsplit(end, 1)[1]


def test_runner_grades_after_the_formats_end_of_thinking(tmp_path, monkeypatch):
    """The runner reads the answer after "</think>" for think-tags: the thinking's \\boxed{7} is
    ignored (with s1's delimiter there would be no answer section and the \\boxed{7} would win)."""
    from types import SimpleNamespace

    import harness.evaluation.runner as ev
    from harness.evaluation.config import EvalConfig
    from test_evaluate import FakeEngine

    class ThinkTagsFake(FakeEngine):
        def generate(self, cfg, prompts, budget, seeds, on_result):
            for j, _ in enumerate(seeds):
                # grader 2: a later "Answer: 5" would beat the box even without an answer section
                # (issue 25, pattern 6), so the answer is a bare value, read only after "</think>"
                on_result(j, SimpleNamespace(text="so \\boxed{7} hmm</think>\n\n5", thinking_tokens=5,
                                             answer_tokens=3, finish_reason="stop", hit_cap=False,
                                             num_waits_used=0, thinking_cap=budget))

    monkeypatch.setattr(ev, "Engine", ThinkTagsFake)
    problem = next(p for p in __import__("harness.evaluation.benchmarks", fromlist=["x"]).load_benchmark("arith")
                   if p.gold == "5")
    got = {}
    for fmt in ("think-tags", "s1"):
        cfg = EvalConfig(model="fake", benchmarks=["arith"], ids=[problem.id], delimiters=fmt,
                         out=str(tmp_path / fmt), progress=False, summary=False)
        run_dir = Path(ev.run_eval(cfg)["arith"]["run_dir"])
        (row,) = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
        got[fmt] = (row["extracted"], row["correct"])
    assert got == {"think-tags": ("5", True), "s1": ("7", False)}


def test_lmeval_tasks_use_the_prompt_builder_and_the_formats_delimiter(toks, tmp_path):
    pytest.importorskip("datasets")
    from harness.evaluation.lmeval_tasks import load_docs, process_results

    folder = tmp_path / "qwen3tok"
    toks["qwen3"].save_pretrained(folder)
    kw = {"enable_thinking": True}
    docs = load_docs("arith", tokenizer=str(folder), delimiters="qwen3", chat_template_kwargs=json.dumps(kw))["test"]
    doc = docs[0]
    assert doc["prompt"] == prompt_text(toks["qwen3"], doc["question"], resolve_format("qwen3"), chat_template_kwargs=kw)
    assert doc["prompt"].endswith("<|im_start|>assistant\n<think>\n") and doc["answer_delimiter"] == "</think>"
    gold = doc["gold"]
    assert process_results(doc, [f"\\boxed{{{int(gold) + 1}}}</think>\n\nAnswer: {gold}"])["exact_match"] == 1
    assert process_results(doc, [f"still thinking \\boxed{{{gold}}}"])["extracted"] == gold   # never closed: explicit only
    s1_folder = tmp_path / "s1tok"
    toks["s1"].save_pretrained(s1_folder)
    with pytest.raises(UserError, match="renders the same"):
        load_docs("arith", tokenizer=str(s1_folder), thinking_format="qwen3")
