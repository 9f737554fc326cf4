"""lm-evaluation-harness tasks (harness/lmeval_tasks): registration, prompts, and lm-eval's HF backend on
the embedded SmolLM2-135M, with every per-sample verdict checked against our own grader.

Needs lm-eval, which the `dev` extra installs: without it these tests fail (they are not skipped)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lm_eval.tasks import TaskManager   # the dev extra installs lm-eval: a missing one fails

from harness.evaluation import lmeval_tasks
from harness.evaluation.benchmarks import BenchmarkUnavailable, load_benchmark
from harness.evaluation.generation.prompts import build_prompt_ids
from harness.evaluation.grading import grade_one

pytestmark = pytest.mark.slow

TASK_NAMES = ("iwsft_aime24", "iwsft_math500", "iwsft_gpqa_diamond", "iwsft_arith")
MAX_GEN_TOKS = 32


@pytest.fixture(scope="module")
def smollm2_path() -> str:
    from harness.core.models import resolve_model

    return resolve_model("smollm2-135m").path


def _manager(**metadata) -> TaskManager:
    # include_defaults=False: indexing lm-eval's own ~10k task files takes seconds and is not needed
    return TaskManager(include_path=lmeval_tasks.include_path(), include_defaults=False, metadata=metadata)


@pytest.fixture(scope="module")
def task_manager(smollm2_path) -> TaskManager:
    return _manager(pretrained=smollm2_path)


def test_tasks_registered_and_packaged(task_manager):
    folder = Path(lmeval_tasks.include_path())
    assert {p.stem for p in folder.glob("*.yaml")} == set(TASK_NAMES)
    assert set(TASK_NAMES) <= set(task_manager.all_tasks)
    assert set(lmeval_tasks.TASKS) == set(TASK_NAMES)


def test_process_results_is_our_grader(task_manager):
    tasks = task_manager.load(["iwsft_arith", "iwsft_aime24", "iwsft_math500"])["tasks"]
    responses = [
        "think about it<|im_start|>answer\n\\boxed{%s}",
        "Answer: %s",
        "so maybe %s or 7 ... <|im_start|>answer\nThe answer is 1",
        "I keep thinking %s",          # no explicit answer: unextracted, never "the last number"
        "",
    ]
    seen_correct = 0
    for name, task in tasks.items():
        doc = task.test_docs()[0]
        for template in responses:
            response = template % doc["gold"] if "%s" in template else template
            ours = grade_one(lmeval_tasks.TASKS[name], response, doc["gold"])
            got = task.process_results(doc, [response])
            assert got == {"exact_match": int(ours.correct), "extracted": ours.extracted}, (name, response)
            seen_correct += ours.correct
    assert seen_correct >= 6  # the boxed and "Answer:" forms are correct for each benchmark


@pytest.fixture
def one_torch_thread():
    """A 135M model gains little from two threads, and two threads on a shared 2-core machine can be ten
    times slower (measured under load: 32 new tokens in 2 s with one thread, 27 s with two)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_lmeval_hf_backend_verdicts_equal_ours(task_manager, smollm2_path, one_torch_thread):
    """lm-eval's HF backend on 3 arith, 2 AIME24 and 2 MATH500 problems: the prompt it sends is ours
    (text and token ids), its text is what our HF backend generates greedily from the same ids with the
    same stop, and its per-sample verdicts are our grader's on that text."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from harness.evaluation.generation.base import GenParams
    from harness.evaluation.generation.hf import HFBackend

    lm = HFLM(pretrained=smollm2_path, dtype="float32", device="cpu", batch_size=1)
    tok = lm.tokenizer
    limits = {"iwsft_arith": 3, "iwsft_aime24": 2, "iwsft_math500": 2}
    names = list(limits)
    out = simple_evaluate(model=lm, tasks=names, samples={n: list(range(k)) for n, k in limits.items()},
                          log_samples=True, task_manager=task_manager,
                          gen_kwargs={"max_gen_toks": MAX_GEN_TOKS}, bootstrap_iters=0)
    backend = HFBackend(lm.model, tok, batch_size=4)
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")

    for name in names:
        bench = lmeval_tasks.TASKS[name]
        problems = {p.id: p for p in load_benchmark(bench, limit=limits[name])}
        samples = out["samples"][name]
        assert sorted(s["doc"]["id"] for s in samples) == sorted(problems)
        prompt_ids, texts = [], []
        for s in samples:
            p = problems[s["doc"]["id"]]
            prompt, gen_kwargs = s["arguments"][0]
            ids = build_prompt_ids(tok, p.question)
            assert prompt == lmeval_tasks.prompt_text(tok, p.question) == tok.decode(ids)
            assert prompt.endswith("<|im_start|>assistant\n<|im_start|>think")
            assert lm.tok_batch_encode([prompt])[0][0].tolist() == ids  # the ids lm-eval feeds the model
            assert gen_kwargs["max_gen_toks"] == MAX_GEN_TOKS and gen_kwargs["until"] == ["<|im_end|>"]
            response = s["filtered_resps"][0]
            assert isinstance(response, str)
            ours = grade_one(bench, response, p.gold)
            assert s["exact_match"] == int(ours.correct), (name, p.id)
            assert s["extracted"] == ours.extracted, (name, p.id)
            assert s["target"] == p.gold
            prompt_ids.append(ids)
            texts.append(response)
        # the same outputs: our backend's greedy continuation (stop at <|im_end|>), as lm-eval decodes it
        comps = backend.generate(prompt_ids, GenParams(max_new_tokens=MAX_GEN_TOKS, stop_token_ids=(end_of_turn,)))
        assert [tok.decode(c.token_ids, skip_special_tokens=True) for c in comps] == texts, name
        res = out["results"][name]
        assert res["exact_match,none"] == pytest.approx(sum(s["exact_match"] for s in samples) / len(samples))
        assert res["extracted,none"] == pytest.approx(
            sum(s["extracted"] is not None for s in samples) / len(samples))


FAKE_GPQA_COLUMNS = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                     "Incorrect Answer 3", "Record ID")


def test_gpqa_docs_keep_question_text_private(tmp_path, smollm2_path):
    path = tmp_path / "gpqa.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FAKE_GPQA_COLUMNS)
        w.writeheader()
        for i in range(3):
            w.writerow({"Question": f"Fake private stem number {i}?", "Correct Answer": f"right{i}",
                        "Incorrect Answer 1": f"wrongA{i}", "Incorrect Answer 2": f"wrongB{i}",
                        "Incorrect Answer 3": f"wrongC{i}", "Record ID": f"recFAKE{i}"})
    task = _manager(pretrained=smollm2_path, gpqa_csv=str(path)).load("iwsft_gpqa_diamond")["tasks"][
        "iwsft_gpqa_diamond"]
    problems = {p.id: p for p in load_benchmark("gpqa_diamond", gpqa_csv=str(path))}
    docs = list(task.test_docs())
    assert [d["id"] for d in docs] == list(problems)
    for doc in docs:
        p = problems[doc["id"]]
        assert set(doc) == {"id", "benchmark", "gold", "prompt_ref", "answer_delimiter"} and doc["gold"] == p.gold
        assert not any(secret in str(doc) for secret in p.private)
        prompt = task.doc_to_text(doc)
        assert "Fake private stem" in prompt and prompt.endswith("<|im_start|>think")
        assert task.process_results(doc, [f"Answer: {p.gold}"]) == {"exact_match": 1, "extracted": p.gold}


def test_gpqa_unavailable_fails_with_one_line(monkeypatch, smollm2_path):
    from test_benchmarks import gated_hub

    gated_hub(monkeypatch)       # the library's error; the message checked below is the product's
    with pytest.raises(BenchmarkUnavailable) as e:
        _manager(pretrained=smollm2_path).load("iwsft_gpqa_diamond")
    msg = str(e.value)
    assert "\n" not in msg and "gated" in msg and "gpqa_csv" in msg


def test_missing_tokenizer_is_a_clear_error():
    from harness.core.errors import UserError

    with pytest.raises(UserError, match="pretrained="):
        _manager().load("iwsft_arith")
