"""Curated data the way the paper defines it: sample the reference model, keep what the grader
accepts (D+ = {tau ~ pi_ref : R(tau) = 1}), write it in the training format.

Sampling goes through the evaluation runner (same prompts, budget forcing and grader as
evaluation, resumable), on a task's TRAINING split; benchmark test problems are refused.

What the policy generated and what the protocol forced are kept apart: the think prefix is part of
the prompt (training puts it on the prompt side), and each row's `forced_spans` gives the character
spans of `response` that the sampler inserted (the close after thinking), which training masks
(`forced_column`). `require_natural_close` keeps only samples whose thinking and answer both ended by
themselves (no cap, so no forced "Final Answer:" after a cut thinking; no answer cut by its budget).
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.core.errors import UserError
from harness.core.io import atomic_write_text, check_output_file

TRAIN_SPLITS = {"arith": "arith_train", "sums": "sums_train"}


def split_response(response: str, think_prefix: str, answer_prefix: str) -> tuple[str, str] | None:
    """(thinking, attempt) of a generated response, or None when it has no answer section."""
    if answer_prefix not in response:
        return None
    thinking, attempt = response.rsplit(answer_prefix, 1)
    thinking = thinking.replace(think_prefix, "", 1) if thinking.startswith(think_prefix) else thinking
    attempt = attempt.strip()
    for lead in ("Final Answer:", "Answer:"):
        if attempt.startswith(lead):
            attempt = attempt[len(lead):].strip()
    return thinking.strip(), attempt


def forced_spans(response: str, row: dict, answer_prefix: str, final_answer_close: str) -> list[list[int]] | None:
    """[start, end) character spans of `response` the sampler forced: the close between thinking and
    answer ("<|im_start|>answer" after a natural stop, the final-answer close after the cap). None
    when the close cannot be located (then the row is not used)."""
    close = final_answer_close if row.get("hit_cap") else answer_prefix
    for cand in ((close, close.lstrip("\n")) if row.get("hit_cap") else (close,)):
        i = response.find(cand)
        if i >= 0:
            return [[i, i + len(cand)]]
    return None


def curate(model: str, task: str, samples: int, out_file: Path, *, temperature: float = 1.0, seed: int = 0,
           limit: int | None = None, thinking_budget: int = 48, answer_budget: int = 16,
           eval_dir: str = "runs/curate", batch_size: int | None = None, require_natural_close: bool = False,
           backend: str = "auto") -> dict:
    from harness.evaluation.config import EvalConfig
    from harness.evaluation.runner import run_eval
    from harness.evaluation.store import read_samples
    from harness.evaluation.generation.prompts import get_delimiters

    if task not in TRAIN_SPLITS:
        raise UserError(f"cannot curate from {task!r}: only tasks with a training split ({', '.join(TRAIN_SPLITS)}) "
                        "are allowed, never benchmark test problems")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1 (the number of training problems to sample), got {limit}; "
                        "leave it out to use them all")
    check_output_file(out_file, "--out")     # before sampling, which takes minutes
    bench = TRAIN_SPLITS[task]
    cfg = EvalConfig(model=model, benchmarks=[bench], backend=backend, limit=limit, samples=samples,
                     temperature=temperature, seed=seed, thinking_budget=thinking_budget,
                     answer_budget=answer_budget, max_new_tokens=thinking_budget + answer_budget + 64,
                     out=eval_dir, batch_size=batch_size)
    metrics = run_eval(cfg)[bench]
    delim = get_delimiters(cfg.delimiters)
    from harness.evaluation.benchmarks import load_benchmark

    questions = {p.id: p for p in load_benchmark(bench, limit=limit)}
    kept, n_forced_out = [], 0
    for (pid, s), row in read_samples(Path(metrics["run_dir"])).items():
        if not row.get("correct") or pid not in questions:
            continue
        natural = not row.get("hit_cap") and row.get("finish_reason") == "stop" and not row.get("num_waits")
        if require_natural_close and not natural:
            n_forced_out += 1
            continue
        parts = split_response(row["response"], delim.think_prefix, delim.answer_prefix)
        if parts is None:
            continue
        p = questions[pid]
        response = row["response"]     # after the prompt, which ends with the think prefix
        spans = forced_spans(response, row, delim.answer_prefix, delim.final_answer_close)
        if spans is None:
            continue
        kept.append({"question": p.question, "response": response, "forced_spans": spans, "thinking": parts[0],
                     "attempt": parts[1], "gold": p.gold, "problem_id": p.id, "sample_index": s, "seed": seed,
                     "source_model": model, "task": task, "temperature": temperature,
                     "hit_cap": bool(row.get("hit_cap")), "answer_finish": row.get("finish_reason")})
    if not kept:
        fixes = ["raise --samples"] + (["raise --limit (more problems)"] if limit is not None else [])
        if n_forced_out:
            fixes.append(f"drop --require-natural-close (it dropped {n_forced_out} correct samples)")
        fixes += [f"lower --temperature (now {temperature:g})"] if temperature > 0 else []
        fixes += [f"raise --thinking-budget (now {thinking_budget})"]
        raise UserError(f"no correct samples from {model} on {task} ({metrics['n']} problems x {samples}); "
                        f"{', '.join(fixes[:-1])} or {fixes[-1]}")
    kept.sort(key=lambda r: (r["problem_id"], r["sample_index"]))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_file, "".join(json.dumps(r) + "\n" for r in kept))
    return {"kept": len(kept), "problems": len(questions), "samples": samples, "dropped_not_natural": n_forced_out,
            "problems_with_a_correct_sample": len({r["problem_id"] for r in kept}), "accuracy": metrics.get("accuracy")}
