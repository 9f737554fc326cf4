"""`iwsft grade`: grade a JSONL of generated responses offline and deterministically.

Each input row needs "response" (the full generated text, thinking + answer) and "gold". Each output
row is the input row plus "correct" (bool) and "extracted" (string, or null when the response states
no answer). The output is written atomically: on any error no output file is left behind.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UserError
from harness.core.io import check_output_file, read_jsonl, write_jsonl_atomic

HELP = "Grade generated responses (JSONL with response/gold) offline, without an LLM judge."


def add_arguments(parser) -> None:
    from harness.evaluation.benchmarks import get_benchmark, names
    from harness.evaluation.grading import GRADER_KINDS
    from harness.evaluation.grading.extract import DEFAULT_DELIMITER

    kinds = ", ".join(f"{b}: {get_benchmark(b).grader}" for b in names())
    parser.add_argument("--benchmark", required=True, metavar="BENCHMARK",
                        help=f"a benchmark or a grader kind ({', '.join(GRADER_KINDS)}); it selects the grader ({kinds})")
    parser.add_argument("--input", required=True, type=Path,
                        help="JSONL, one row per response with 'response' and 'gold'")
    parser.add_argument("--output", required=True, type=Path,
                        help="JSONL to write: input rows plus 'correct' and 'extracted'")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds allowed per item (default: 10)")
    parser.add_argument("--workers", type=int, default=None,
                        help="grading processes (default: CPU count, at most 8)")
    parser.add_argument("--answer-delimiter", default=DEFAULT_DELIMITER,
                        help="the answer is read after the last occurrence of this string "
                             f"(default: {DEFAULT_DELIMITER!r}; use '</think>' for models that close "
                             "their thinking that way)")
    parser.add_argument("--list-unread", action="store_true",
                        help="list the rows where the grader read no answer (and, for multiple choice, the rows "
                             "that state more than one letter), by file line, problem id and sample index (id or "
                             "problem_id, and sample_index, where the rows have them); never the response text")


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """Rows of a grading input file; UserError naming the file and line for anything malformed."""
    if not path.exists():
        raise UserError(f"input file {path} does not exist; pass the JSONL of generated responses")
    if not path.is_file():
        raise UserError(f"input {path} is not a file; pass the JSONL of generated responses")
    rows = read_jsonl(path, expect='{"response": ..., "gold": ...}')
    for lineno, row in rows:
        for key in ("response", "gold"):
            if key not in row:
                raise UserError(f"{path}:{lineno}: missing key {key!r}; every row needs 'response' and 'gold'")
        if not isinstance(row["response"], str):
            raise UserError(f"{path}:{lineno}: 'response' must be a string (use \"\" for an empty generation)")
    if not rows:
        raise UserError(f"input file {path} has no rows; generate responses first")
    return rows


def _row_id(row: dict) -> str:
    """' (id X, sample K)' of a row: `id`, or iwsft eval's `problem_id` and `sample_index`; '' without either."""
    pid = row.get("id", row.get("problem_id"))
    parts = ([f"id {pid}"] if pid is not None else []) + ([f"sample {row['sample_index']}"] if "sample_index" in row else [])
    return f" ({', '.join(parts)})" if parts else ""


def run(args) -> int:
    from rich.console import Console
    from rich.markup import escape

    from harness.evaluation.grading import check_gold, grade_many_detailed, kind_of

    kind_of(args.benchmark)
    if args.timeout is not None and args.timeout <= 0:
        raise UserError(f"--timeout must be positive seconds, got {args.timeout}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.input.resolve() == args.output.resolve():
        raise UserError("--output is the same file as --input; write the graded rows to a new file")
    check_output_file(args.output, "--output")
    numbered = read_rows(args.input)
    for lineno, row in numbered:
        try:
            check_gold(args.benchmark, row["gold"])
        except UserError as e:
            raise UserError(f"{args.input}:{lineno}: {e}") from None
    rows = [row for _, row in numbered]
    from harness.evaluation.grading import GRADER_VERSION
    from harness.evaluation.grading.extract import choice_candidates
    letters = ([choice_candidates(r["response"], args.answer_delimiter) for r in rows]
               if kind_of(args.benchmark) == "choice" else None)

    results = grade_many_detailed(args.benchmark, [(r["response"], str(r["gold"])) for r in rows],
                                  timeout_s=args.timeout, workers=args.workers,
                                  answer_delimiter=args.answer_delimiter)
    out_rows = []
    for row, (verdict, _) in zip(rows, results):
        out = {k: v for k, v in row.items() if k not in ("correct", "extracted")}
        out["correct"] = verdict.correct
        out["extracted"] = verdict.extracted
        out["grader_version"] = GRADER_VERSION  # re-grade rows whose version differs
        out_rows.append(out)
    write_jsonl_atomic(args.output, out_rows)

    n = len(rows)
    n_correct = sum(v.correct for v, _ in results)
    n_unextracted = sum(v.extracted is None for v, _ in results)
    n_timeout = sum(status == "timeout" for _, status in results)
    n_error = sum(status.startswith("error") for _, status in results)
    extra = (f" timeouts={n_timeout}" if n_timeout else "") + (f" errors={n_error}" if n_error else "")
    if letters is not None:
        extra += f" multiple_letters={sum(len(x) > 1 for x in letters)}"
    console = Console(soft_wrap=True, highlight=False)
    if args.list_unread:
        for (lineno, row), (verdict, _), i in zip(numbered, results, range(n)):
            where = f"{args.input}:{lineno}" + _row_id(row)
            if verdict.extracted is None:
                console.print(escape(f"{where}: no answer read"), markup=True)
            elif letters is not None and len(letters[i]) > 1:
                console.print(escape(f"{where}: {len(letters[i])} letters stated ({', '.join(letters[i])}); "
                                     f"graded as {verdict.extracted}"), markup=True)
    console.print(
        f"[bold]{args.benchmark}[/bold]: n={n} correct={n_correct} accuracy={n_correct / n:.1%} "
        f"unextracted={n_unextracted}{extra} -> {escape(str(args.output))}", markup=True)
    return 0
