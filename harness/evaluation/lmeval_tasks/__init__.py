"""Our benchmarks as lm-evaluation-harness tasks, with our prompts and our grader.

Tasks (YAML files in this folder, functions in `utils.py`): `iwsft_aime24`, `iwsft_math500`,
`iwsft_gpqa_diamond`, `iwsft_arith` (tag `iwsft` runs the first three). Tested with lm-eval 0.4.13
(`pip install -e '.[lmeval]'`). Usage:

    lm_eval --model hf --model_args pretrained=MODEL,dtype=float32 \\
        --tasks iwsft_aime24,iwsft_math500,iwsft_gpqa_diamond \\
        --include_path "$(python -c 'import harness.evaluation.lmeval_tasks as t; print(t.include_path())')" \\
        --gen_kwargs max_gen_toks=N --batch_size 8 --output_path OUT [--log_samples]

- Do NOT pass --apply_chat_template (nor --system_instruction / --num_fewshot): the task builds the
  whole prompt itself, exactly as our runner does (harness.evaluation.generation.prompts.build_prompt_ids):
  the model's own chat template with the generation prompt (the template's default system prompt),
  then the thinking format's think prefix ("<|im_start|>think" for s1, "<think>\\n" for think-tags and
  qwen3 unless the template already opened it). The format is `--metadata '{"delimiters": "qwen3"}'`
  (alias key `thinking_format`; default s1) and template variables go in `chat_template_kwargs`
  (`--metadata '{"delimiters": "qwen3", "chat_template_kwargs": {"enable_thinking": true}}'`). The tokenizer is loaded from the model arguments lm-eval hands every
  task as metadata (`tokenizer`, else `pretrained`, else `model`, as lm-eval's RULER tasks do); for a
  model object, or to override, pass `--metadata '{"tokenizer": "PATH"}'`. Checked for every
  prompt: the text re-tokenizes to exactly build_prompt_ids' ids (a warning says when it does not).
- Generation: lm-eval's plain `generate_until`, greedy, until "<|im_end|>" (and the model's EOS, which
  ends a think-tags model's turn),
  at most `max_gen_toks` new tokens (default 31744 = 32768 - 1024 of prompt room; with the HF
  backend prompt + max_gen_toks must fit the model's context, `max_length=` in --model_args, or
  lm-eval left-truncates the prompt).
- Grading: `process_results` calls harness.evaluation.grading.grade_one on the returned text, reading
  the answer after the format's end of thinking ("<|im_start|>answer", "</think>"; the whole response
  when the format has no thinking phase); thinking that never closed has no answer section, and only
  explicit answer patterns are read from it (as in our runner). Metrics:
  `exact_match` (mean of Verdict.correct) and `extracted` (per sample the extracted answer or null,
  in --log_samples output; aggregated as the fraction of samples with an answer).
- Options via --metadata JSON: `gpqa_csv` (else IWSFT_GPQA_CSV, else the gated hub dataset; if none
  works the task fails with our one-line BenchmarkUnavailable message), `gpqa_prompt` (s1 default,
  or simple-evals), `arith_level`, `arith_split`, `system` (a system message instead of the template's default),
  `tokenizer`, `revision`, `trust_remote_code`, `delimiters` (or `thinking_format`), `chat_template_kwargs`.

Not the same as our runner (`iwsft eval`), by design of lm-eval:
- No budget forcing: one free generation, no thinking cap, no "Wait", no forced
  "<|im_start|>answer" / "Final Answer:" close. It matches our `--thinking-budget none --wait 0`
  output only when the model closes its thinking with "<|im_start|>answer" itself and finishes
  within max_gen_toks; if thinking ends at "<|im_end|>" lm-eval stops there (our runner would force
  the answer phase), and a length cut leaves no answer phase (ours forces "Final Answer:").
- lm-eval's `hf` backend decodes with skip_special_tokens=True, so "<|im_start|>" (hence the answer
  delimiter "<|im_start|>answer") is missing from the text it grades: grade_one then finds no
  answer section and searches the whole response with its explicit patterns (last \\boxed{},
  "Answer:", "the answer is"; never the last number). This can differ from our runner's verdict when
  the answer section states its answer differently from an earlier \\boxed{} in the thinking.
  (lm-eval 0.4.13's `vllm` backend keeps special tokens, so there the delimiter is seen.)
- GPQA Diamond: docs hold only the Record ID and gold letter (the prompt text stays in memory), but
  lm-eval itself writes prompts and responses into --log_samples / --write_out output and its
  request cache: keep those files private (never commit or publish them), or do not use those
  flags with iwsft_gpqa_diamond.
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from harness.core.errors import UserError

log = logging.getLogger(__name__)

# lm-eval task name -> our benchmark name
TASKS: dict[str, str] = {
    "iwsft_aime24": "aime24",
    "iwsft_math500": "math500",
    "iwsft_gpqa_diamond": "gpqa_diamond",
    "iwsft_arith": "arith",
}
TOKENIZER_KEYS = ("tokenizer", "pretrained", "model")  # where a model name arrives in lm-eval metadata

# Prompts of non-public benchmarks, kept out of the docs lm-eval logs: key -> prompt text.
_PRIVATE_PROMPTS: dict[str, str] = {}


def include_path() -> str:
    """The folder to give lm-eval as --include_path (or TaskManager(include_path=...))."""
    return str(Path(__file__).resolve().parent)


def tokenizer_source(metadata: dict[str, Any]) -> str:
    for key in TOKENIZER_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value:
            return value
    raise UserError("the iwsft_* lm-eval tasks build the chat-template prompt with the model's tokenizer, "
                    "but lm-eval passed no model name; fix: --model_args pretrained=PATH or "
                    "--metadata '{\"tokenizer\": \"PATH\"}'")


def _truthy(value: Any) -> bool:
    return value.strip().lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)


@lru_cache(maxsize=4)
def _load_tokenizer(source: str, revision: str | None, trust_remote_code: bool):
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    return AutoTokenizer.from_pretrained(source, **kwargs)


def prompt_text(tokenizer: Any, question: str, system: str | None = None, delimiters: str = "s1",
                chat_template_kwargs: dict | None = None) -> str:
    """The prompt as text, from the runner's one prompt builder (harness.evaluation.generation.prompts):
    chat template with the generation prompt, then the think prefix of the thinking format."""
    from harness.evaluation.generation import prompts
    from harness.evaluation.generation.formats import resolve_format

    return prompts.prompt_text(tokenizer, question, resolve_format(delimiters, chat_template_kwargs), system,
                               chat_template_kwargs)


def load_docs(benchmark: str, **metadata: Any):
    """lm-eval `custom_dataset`: {"test": datasets.Dataset} of our benchmark's problems, canonical order.

    Doc fields: id, benchmark, gold, and for public benchmarks question + prompt; for non-public ones
    (GPQA) prompt_ref instead (the prompt stays in this process's memory)."""
    import datasets

    from harness.evaluation.benchmarks import BenchmarkUnavailable, get_benchmark, load_benchmark
    from harness.evaluation.generation.formats import check_template, parse_chat_template_kwargs, resolve_format
    from harness.evaluation.generation.prompts import build_prompt_ids

    spec = get_benchmark(benchmark)
    # the thinking format first: a bad one is one line before any data or tokenizer loads
    delimiters = metadata.get("delimiters") or metadata.get("thinking_format") or "s1"
    template_kwargs = parse_chat_template_kwargs(metadata.get("chat_template_kwargs"))
    fmt = resolve_format(delimiters, template_kwargs)
    options = {k: metadata[k] for k in spec.options if metadata.get(k) is not None}   # the loader's own keys
    try:
        problems = load_benchmark(benchmark, gpqa_csv=metadata.get("gpqa_csv"), **options)
    except BenchmarkUnavailable as e:  # one line; with lm-eval the CSV comes through --metadata
        raise BenchmarkUnavailable(f"{e} (with lm-eval: --metadata '{{\"gpqa_csv\": \"PATH\"}}')") from None
    source = tokenizer_source(metadata)
    revision = metadata.get("revision")
    tokenizer = _load_tokenizer(source, str(revision) if revision else None,
                                _truthy(metadata.get("trust_remote_code", False)))
    check_template(tokenizer, delimiters, template_kwargs, source=f"tokenizer {source!r}")
    system = metadata.get("system")
    rows, mismatched = [], 0
    for p in problems:
        prompt = prompt_text(tokenizer, p.question, system, delimiters, template_kwargs)
        if mismatched == 0 and list(tokenizer.encode(prompt, add_special_tokens=False)) != \
                build_prompt_ids(tokenizer, p.question, fmt, system=system, chat_template_kwargs=template_kwargs):
            mismatched += 1
        row = {"id": p.id, "benchmark": benchmark, "gold": p.gold, "answer_delimiter": fmt.answer_prefix.strip()}
        if spec.public:
            row.update(question=p.question, prompt=prompt)
        else:
            key = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:32]  # content-addressed
            _PRIVATE_PROMPTS[key] = prompt
            row["prompt_ref"] = key
        rows.append(row)
    if mismatched:
        log.warning("iwsft_%s: the prompt text does not re-tokenize to build_prompt_ids' ids with %s; "
                    "lm-eval's token ids may differ from our runner's", benchmark, source)
    if not spec.public:
        log.warning("iwsft_%s: lm-eval writes prompts (question text) into --log_samples/--write_out "
                    "output and its request cache; keep such files private", benchmark)
    return {"test": datasets.Dataset.from_list(rows)}


def doc_to_text(doc: dict) -> str:
    if doc.get("prompt"):
        return doc["prompt"]
    try:
        return _PRIVATE_PROMPTS[doc["prompt_ref"]]
    except KeyError:
        raise UserError(f"no prompt for {doc.get('benchmark')} problem {doc.get('id')}: its docs were "
                        "not loaded in this process") from None


def process_results(doc: dict, results: Sequence[str]) -> dict:
    """Grade lm-eval's (filtered) response with our grader: exact_match = Verdict.correct (0/1),
    extracted = the extracted answer (None when no answer was found)."""
    from harness.evaluation.grading import grade_one

    from harness.evaluation.grading.extract import DEFAULT_DELIMITER

    response = results[0] if results else ""
    verdict = grade_one(doc["benchmark"], response, doc["gold"],
                        answer_delimiter=doc.get("answer_delimiter", DEFAULT_DELIMITER))
    return {"exact_match": int(verdict.correct), "extracted": verdict.extracted}


def extracted_rate(items: Sequence[str | None]) -> float:
    """Aggregation of the per-sample `extracted` values: fraction of samples with an answer."""
    items = list(items)
    return sum(x is not None for x in items) / len(items) if items else 0.0


__all__ = ["TASKS", "include_path", "prompt_text", "load_docs", "doc_to_text", "process_results",
           "extracted_rate", "tokenizer_source"]
