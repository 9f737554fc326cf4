"""Offline, deterministic grading of generated responses (replaces s1's gpt-4o-mini judge).

    from harness.evaluation.grading import Verdict, grade_one, grade_many, kind_of

Extraction (extract.py): the text after the LAST answer delimiter, then the explicit answer stated
last (\\boxed{} / "Answer:" / "the answer is"), else the value the section states; the thinking
text only when there is no answer section, explicit patterns only, never "the last number". Equivalence (equivalence.py): integers as integers, GPQA letters A-D, MATH500
through math-verify with documented guards. grade_many runs the math judge in a process pool with
a per-item timeout (pool.py); a timed-out item is graded incorrect and keeps its extraction.

Deviations from s1 to report: no LLM judge for non-integer answers; GPQA never defaults to "A".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from harness.core.errors import UserError
from harness.evaluation.grading.extract import DEFAULT_DELIMITER, extract_answer, extract_choice

GRADER_KINDS = ("integer", "math", "choice")

# Stored with every verdict (samples.jsonl "grader_version"); a run folder whose verdicts carry
# another version (or none: written before it was recorded) is re-graded offline when it is next
# run. Bump it whenever a change to extraction or equivalence can change a verdict.
# "1": the grader before issue 25. "2": issue 25's patterns (last explicit answer wins, joined boxes,
# labels, relations, times, GPQA letters without an anchor) and plain responses read for their final
# stated value (issue 30).
GRADER_VERSION = "2"


@dataclass(frozen=True)
class Verdict:
    correct: bool
    extracted: str | None  # None = no answer found (counts as "unextracted")


def kind_of(benchmark: str) -> str:
    """Grading kind of a grader kind or of a benchmark (each benchmark declares its own kind);
    UserError naming the valid ones otherwise."""
    if benchmark in GRADER_KINDS:
        return benchmark
    from harness.evaluation.benchmarks import get_benchmark, names
    from harness.evaluation.benchmarks._core import lmeval_name_hint

    try:
        return get_benchmark(benchmark).grader
    except (UserError, TypeError):
        valid = ", ".join(names() + list(GRADER_KINDS))
        raise UserError(f"unknown benchmark {benchmark!r}{lmeval_name_hint(benchmark) or '; use one of: ' + valid}") from None


def check_gold(benchmark: str, gold) -> str:
    """The gold as a string, or UserError when it cannot be graded for this benchmark."""
    from harness.evaluation.grading.equivalence import choice_letter, to_int
    kind = kind_of(benchmark)
    if gold is None or not isinstance(gold, (str, int, float)) or isinstance(gold, bool) or not str(gold).strip():
        raise UserError(f"gold answer {gold!r} is empty or not a string; give every {benchmark} row a gold answer")
    g = str(gold).strip()
    if kind == "integer" and to_int(g) is None:
        raise UserError(f"gold {g!r} is not an integer; {benchmark} golds must be integers such as '25' or '025'")
    if kind == "choice" and choice_letter(g) is None:
        raise UserError(f"gold {g!r} is not a letter A-D; {benchmark} golds are the letter of the correct option")
    return g


def extract(benchmark: str, response: str, *, answer_delimiter: str = DEFAULT_DELIMITER) -> str | None:
    """The answer a response states for this benchmark, or None (unextracted)."""
    if kind_of(benchmark) == "choice":
        return extract_choice(str(response), answer_delimiter)
    return extract_answer(str(response), answer_delimiter)


def grade_one(benchmark: str, response: str, gold: str, *,
              answer_delimiter: str = DEFAULT_DELIMITER) -> Verdict:
    """Grade one response in this process (no timeout beyond a SIGALRM guard where available;
    use grade_many for large or untrusted batches)."""
    return grade_many(benchmark, [(response, gold)], workers=1, answer_delimiter=answer_delimiter)[0]


def grade_many(benchmark: str, items: list[tuple[str, str]], *, timeout_s: float = 10.0,
               workers: int | None = None, answer_delimiter: str = DEFAULT_DELIMITER,
               _judge: Callable[[str, str | None, str], bool] | None = None) -> list[Verdict]:
    """Grade (response, gold) pairs; one Verdict per pair, same order, deterministic.

    Extraction runs here (linear-time regexes). Integer and choice judging are pure string work
    and run here too; the math judge runs in a process pool with a per-item timeout of timeout_s
    (in-process under a SIGALRM timer for workers=1 or fewer than 8 items). A timed-out or crashed
    item is graded incorrect and keeps its extraction. `_judge` (tests only) replaces the judge
    function; it must be a picklable top-level function.
    """
    return [v for v, _ in grade_many_detailed(benchmark, items, timeout_s=timeout_s, workers=workers,
                                              answer_delimiter=answer_delimiter, _judge=_judge)]


def grade_many_detailed(benchmark: str, items: list[tuple[str, str]], *, timeout_s: float = 10.0,
                        workers: int | None = None, answer_delimiter: str = DEFAULT_DELIMITER,
                        _judge: Callable[[str, str | None, str], bool] | None = None,
                        ) -> list[tuple[Verdict, str]]:
    """grade_many plus a status per item: "graded", "unextracted", "timeout" or "error: ..."."""
    from harness.evaluation.grading.equivalence import judge as default_judge
    from harness.evaluation.grading.pool import POOL_MIN_ITEMS, map_with_timeout

    kind = kind_of(benchmark)
    golds = [check_gold(benchmark, gold) for _, gold in items]
    extracted = [extract(benchmark, resp, answer_delimiter=answer_delimiter) for resp, _ in items]
    judge = _judge or default_judge

    todo = [i for i, e in enumerate(extracted) if e is not None]
    args = [(kind, extracted[i], golds[i]) for i in todo]
    needs_pool = kind == "math" or _judge is not None
    in_process = True if not needs_pool else (workers == 1 or len(args) < POOL_MIN_ITEMS)
    outcomes = map_with_timeout(judge, args, timeout_s=timeout_s, workers=workers, in_process=in_process)

    out: list[tuple[Verdict, str]] = [(Verdict(False, None), "unextracted") for _ in items]
    for i, o in zip(todo, outcomes):
        status = "graded" if o.ok else ("timeout" if o.timed_out else f"error: {o.error}")
        out[i] = (Verdict(correct=bool(o.value) if o.ok else False, extracted=extracted[i]), status)
    return out


__all__ = ["GRADER_KINDS", "GRADER_VERSION", "Verdict", "grade_one", "grade_many", "grade_many_detailed", "kind_of",
           "check_gold", "extract"]
