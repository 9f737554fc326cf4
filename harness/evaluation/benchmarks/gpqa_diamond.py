"""GPQA Diamond: 198 four-option questions, gated on the hub (Idavidrein/gpqa, config gpqa_diamond).

Its authors ask that the questions never appear in plain text online, so this benchmark is not
public: the harness never prints, logs or writes a question (or an option, or the canary string);
samples hold the response and the extracted letter only.

Sources, in order: the `gpqa_csv` option (`--gpqa-csv PATH`), the IWSFT_GPQA_CSV environment
variable, the hub (needs an HF token whose account accepted the dataset's terms). The CSV uses the
dataset's own columns (Question, Correct Answer, Incorrect Answer 1..3, Record ID, ...).

Options are shuffled with a per-question permutation derived from sha256 of the Record ID
(independent of Python's `random`), the order is kept in `meta["option_order"]`, and the gold letter
is the POSITION of the correct answer in that order: never found by comparing option texts (two
options of one record differ only in letter case).

Prompt (option `gpqa_prompt`): `s1` (default, s1's evaluation: the question, a blank line, then
"A) ..." to "D) ...") or `simple-evals` (OpenAI simple-evals' instruction asking for "Answer: X").
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

from harness.evaluation.benchmarks._core import Benchmark, BenchmarkUnavailable, Problem
from harness.core.errors import UserError

ENV_VAR = "IWSFT_GPQA_CSV"
HUB_ID, HUB_CONFIG = "Idavidrein/gpqa", "gpqa_diamond"
LETTERS = "ABCD"
# Source option index i: 0 = "Correct Answer", 1..3 = "Incorrect Answer i".
SOURCE_COLUMNS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
REQUIRED_COLUMNS = ("Question", *SOURCE_COLUMNS, "Record ID")

UNAVAILABLE = (
    "GPQA Diamond is gated: accept its terms on huggingface.co/datasets/Idavidrein/gpqa and log in "
    f"(HF_TOKEN / huggingface-cli login), or give a local CSV with --gpqa-csv PATH or {ENV_VAR}=PATH"
)

# Prompt templates, option `gpqa_prompt`. "s1" (default): the doc_to_text of s1's
# `gpqa_diamond_openai` tasks (simplescaling/lm-evaluation-harness), the question and the options and
# no instruction; those tasks keep the simple-evals instruction commented out. "simple-evals": OpenAI
# simple-evals' multiple-choice template, which asks for a last line "Answer: $LETTER".
_OPTIONS = "{question}\n\nA) {A}\nB) {B}\nC) {C}\nD) {D}"
TEMPLATES = {
    "s1": _OPTIONS,
    "simple-evals": (
        "Answer the following multiple choice question. The last line of your response should be of "
        "the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think "
        "step by step before answering.\n\n" + _OPTIONS),
}
DEFAULT_PROMPT = "s1"


def option_order(record_id: str) -> list[int]:
    """Permutation of source option indices: position k (letter "ABCD"[k]) shows option order[k]."""
    key = lambda i: hashlib.sha256(f"gpqa_diamond:{record_id}:{i}".encode()).hexdigest()  # noqa: E731
    return sorted(range(4), key=key)


def _clean(text) -> str:
    return "" if text is None else str(text).strip()


def prompt_template(name: str | None) -> str:
    name = name or DEFAULT_PROMPT
    if name not in TEMPLATES:
        raise UserError(f"gpqa_prompt {name!r} is not a GPQA prompt; use one of: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def problem_from_record(row: dict, template: str = TEMPLATES[DEFAULT_PROMPT]) -> Problem:
    record_id = _clean(row["Record ID"])
    question = _clean(row["Question"])
    options = [_clean(row[c]) for c in SOURCE_COLUMNS]
    order = option_order(record_id)
    shown = [options[i] for i in order]
    gold_index = order.index(0)           # by position, never by text
    prompt = template.format(question=question, **dict(zip(LETTERS, shown)))
    meta = {"record_id": record_id, "option_order": order, "gold_index": gold_index}
    for col, key in (("High-level domain", "domain"), ("Subdomain", "subdomain")):
        if row.get(col):
            meta[key] = _clean(row[col])
    return Problem(id=record_id, question=prompt, gold=LETTERS[gold_index], meta=meta,
                   private=tuple(t for t in (question, *options) if t))


def _rows_from_csv(path: str) -> list[dict]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"GPQA CSV not found: {p} (from --gpqa-csv or {ENV_VAR})")
    with p.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"GPQA CSV {p} lacks column(s) {', '.join(missing)}; "
                            "expected the dataset's own columns (Question, Correct Answer, ...)")
        rows = list(reader)
    if not rows:
        raise UserError(f"GPQA CSV {p} has no rows")
    return rows


def _rows_from_hub() -> list[dict]:
    from harness.core import hub

    why = hub.unavailable(HUB_ID, "dataset")
    if why:
        raise BenchmarkUnavailable(f"GPQA Diamond comes from the hub, which is unreachable here ({why}); give a local "
                                   f"CSV with --gpqa-csv PATH or {ENV_VAR}=PATH")
    try:
        import datasets

        ds = datasets.load_dataset(HUB_ID, HUB_CONFIG, split="train")
        return [dict(r) for r in ds]
    except Exception as e:  # gated / offline / no token: one line, never the data
        raise BenchmarkUnavailable(f"{UNAVAILABLE} (hub load failed: {type(e).__name__})") from None


def _load(options) -> list[Problem]:
    template = prompt_template(options.get("gpqa_prompt"))  # a bad name fails before any data is read
    path = options.get("gpqa_csv") or os.environ.get(ENV_VAR)
    rows = _rows_from_csv(path) if path else _rows_from_hub()
    problems = [problem_from_record(r, template) for r in rows]
    seen: set[str] = set()
    for p in problems:
        if not p.id:
            raise UserError("GPQA data has a row with an empty Record ID")
        if p.id in seen:
            raise UserError(f"GPQA data has duplicate Record ID {p.id}")
        seen.add(p.id)
    return problems


BENCHMARK = Benchmark(
    name="gpqa_diamond",
    description="GPQA Diamond, 198 questions, 4 options shuffled per question (gated; never written out)",
    load=_load,
    grader="choice",
    title="GPQA Diamond",
    report_order=40,
    public=False,
    source=f"hub {HUB_ID}/{HUB_CONFIG} or a local CSV (--gpqa-csv / {ENV_VAR})",
    options=("gpqa_prompt",),   # s1 (default) | simple-evals
)
