"""Benchmarks read from a user's file (`iwsft eval --benchmark-file [NAME=]PATH`, a suite's
`benchmark_files:`), registered like the built-in ones and graded by the same graders.

JSONL: one object per line. YAML: a list of such objects, or a mapping with file-level `grader`,
`title`, `description`, `source` and the list under `problems`. Fields of a problem:

    id        unique within the file
    question  the user-message text
    gold      the answer: an integer ("integer"), a LaTeX/number answer ("math"), or for "choice" the
              letter of the correct option (or the option's exact text)
    grader    a kind of harness.evaluation.grading.GRADER_KINDS, one per file (YAML: may be file-level)
    options   "choice" only: 2-4 option texts, shown after the question as "A) ..." (GPQA's s1 layout)
    meta      optional mapping kept with the problem (provenance, url, ...)

The whole file is checked when it is registered, before any model loads; an error names file:line.
The file's sha256 is the Benchmark's `content_sha256`, which keys its run folders.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Mapping

import yaml

from harness.core.errors import UserError
from harness.core.io import NoAliasLoader, json_loads, load_yaml_text, lone_surrogate
from harness.evaluation.benchmarks._core import Benchmark, Problem, get_benchmark, names, register

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
ROW_KEYS = ("id", "question", "gold", "grader", "options", "meta")
FILE_KEYS = ("grader", "title", "description", "source", "problems")
LETTERS = "ABCD"


def parse_file_arg(text: str) -> tuple[str, str]:
    """'NAME=PATH' or 'PATH' (the name is then the file's stem) -> (name, path)."""
    head, sep, tail = str(text).partition("=")
    if sep and NAME_RE.fullmatch(head.strip()):
        return head.strip(), tail.strip()
    return Path(text).stem, str(text)


def register_files(files: Mapping[str, str]) -> list[str]:
    """Register each {name: path}; returns the names. Re-registering an unchanged file is a no-op."""
    return [register_file(path, name) for name, path in files.items()]


def register_file(path: str | Path, name: str | None = None) -> str:
    path = Path(path).expanduser()
    name = name or path.stem
    if not NAME_RE.fullmatch(name):
        raise UserError(f"benchmark file {path}: name {name!r} is not usable as a folder name; give one of letters, "
                        f"digits, '_', '.', '-' with NAME={path}")
    spec = read_benchmark_file(path, name)
    if name in names():
        old = get_benchmark(name)
        if old.content_sha256 == spec.content_sha256 and old.source == spec.source:
            return name                       # the same file again (a suite loaded twice)
        what = f"the file {old.source}" if old.content_sha256 else "a built-in benchmark's"
        raise UserError(f"benchmark file {path}: the name {name!r} is already {what}; give it another name "
                        f"(--benchmark-file OTHER={path}, or another key under benchmark_files:)")
    register(spec)
    return name


def read_benchmark_file(path: Path, name: str) -> Benchmark:
    """The file's Benchmark (problems parsed and checked now), or a UserError naming file:line."""
    if not path.is_file():
        raise UserError(f"benchmark file {path} does not exist (or is not a file); check the path")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"benchmark file {path} is not UTF-8 text; save it as UTF-8") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        head, rows = {}, _jsonl_rows(path, text)
    elif suffix in (".yaml", ".yml"):
        head, rows = _yaml_rows(path, text)
    else:
        raise UserError(f"benchmark file {path}: use a .jsonl or .yaml file (one problem per line, or a YAML list)")
    if not rows:
        raise UserError(f"benchmark file {path} holds no problems; add rows with id, question, gold, grader")
    default_grader = head.get("grader")
    problems: list[Problem] = []
    kind_line: tuple[str, int] | None = None
    seen: dict[str, int] = {}
    for line, row in rows:
        kind = _check_row(path, line, row, default_grader)
        if kind_line is None:
            kind_line = (kind, line)
        elif kind != kind_line[0]:
            raise UserError(f"{path}:{line}: grader {kind!r} differs from {kind_line[0]!r} on line {kind_line[1]}; a "
                            "benchmark file has one grader kind (split it into one file per kind)")
        pid = str(row["id"]).strip()
        if pid in seen:
            raise UserError(f"{path}:{line}: duplicate id {pid!r} (first on line {seen[pid]}); ids must be unique")
        seen[pid] = line
        problems.append(_problem(path, line, row, kind, pid))
    kind = kind_line[0]
    frozen = tuple(problems)
    return Benchmark(
        name=name,
        description=str(head.get("description") or f"{len(problems)} problems from {path.name}"),
        load=lambda options: list(frozen),   # parsed once, at registration: the bytes the hash names
        grader=kind,
        source=str(head.get("source") or path.resolve()),
        title=str(head.get("title") or ""),
        content_sha256=sha,
    )


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json_loads(line, f"{path}:{n}")
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not valid JSON ({e.msg}, column {e.colno}); each line must be one JSON "
                            "object") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: a {type(row).__name__}, not a JSON object with id, question, gold, grader")
        rows.append((n, row))
    return rows


class _LineLoader(NoAliasLoader):
    """Safe YAML (no aliases: a "billion laughs" file would blow up in _strip_lines) that records
    each mapping's line under '__line__'."""


def _mapping_with_line(loader, node):
    m = loader.construct_mapping(node, deep=True)
    m["__line__"] = node.start_mark.line + 1
    return m


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def _strip_lines(obj):
    if isinstance(obj, dict):
        return {k: _strip_lines(v) for k, v in obj.items() if k != "__line__"}
    if isinstance(obj, list):
        return [_strip_lines(v) for v in obj]
    return obj


def _yaml_rows(path: Path, text: str) -> tuple[dict, list[tuple[int, dict]]]:
    doc = load_yaml_text(text, str(path), _LineLoader)
    head: dict = {}
    if isinstance(doc, dict):
        _check_keys(path, doc.get("__line__", 1), doc, FILE_KEYS, "file-level key")
        head = _strip_lines({k: v for k, v in doc.items() if k != "problems"})
        doc = doc.get("problems")
        if not isinstance(doc, list):
            raise UserError(f"{path}: a YAML mapping needs a 'problems:' list of problems (id, question, gold)")
    if doc is None:
        return head, []
    if not isinstance(doc, list):
        raise UserError(f"{path}: expected a YAML list of problems (or a mapping with 'problems:')")
    rows = []
    for i, row in enumerate(doc):
        if not isinstance(row, dict):
            raise UserError(f"{path}: problem {i + 1} is a {type(row).__name__}, not a mapping with id, question, gold")
        rows.append((row.get("__line__", 0), {k: _strip_lines(v) for k, v in row.items() if k != "__line__"}))
    return head, rows


def _check_keys(path: Path, line: int, row: dict, allowed: tuple[str, ...], what: str) -> None:
    for key in row:
        if key == "__line__" or key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
        raise UserError(f"{path}:{line}: unknown {what} {key!r}; {hint}")


def _check_row(path: Path, line: int, row: dict, default_grader) -> str:
    """The row's grader kind after checking its fields (UserError naming file:line otherwise)."""
    from harness.evaluation.grading import GRADER_KINDS

    _check_keys(path, line, row, ROW_KEYS, "field")
    bad = lone_surrogate(row)
    if bad is not None:
        raise UserError(f"{path}:{line}: {bad!r} holds a lone surrogate escape (\\udXXX: not text, cannot be "
                        "stored); fix that text")
    gold = row.get("gold")
    if isinstance(gold, float) and not math.isfinite(gold):
        raise UserError(f"{path}:{line}: gold is a number too large to read ({gold}); quote it as text, e.g. "
                        "gold: \"1e309\"")
    for key in ("id", "question", "gold"):
        value = row.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise UserError(f"{path}:{line}: missing field {key!r} (every problem needs id, question, gold, grader)")
    if not isinstance(row["question"], str):
        raise UserError(f"{path}:{line}: question must be text, not {type(row['question']).__name__}")
    if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool):
        raise UserError(f"{path}:{line}: id must be text or an integer, not {type(row['id']).__name__}")
    kind = row.get("grader", default_grader)
    if kind is None:
        raise UserError(f"{path}:{line}: missing field 'grader' (one of {', '.join(GRADER_KINDS)})")
    if kind not in GRADER_KINDS:
        raise UserError(f"{path}:{line}: unknown grader kind {kind!r}; use one of {', '.join(GRADER_KINDS)}")
    options = row.get("options")
    if kind == "choice":
        if options is None:
            raise UserError(f"{path}:{line}: a choice question without options; add options: [2 to 4 option texts]")
        if (not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS)
                or not all(isinstance(o, (str, int, float)) and str(o).strip() for o in options)):
            raise UserError(f"{path}:{line}: options must be a list of 2 to 4 non-empty texts (letters A-D)")
    elif options is not None:
        raise UserError(f"{path}:{line}: options apply to grader 'choice' only, not {kind!r}; drop them")
    if row.get("meta") is not None and not isinstance(row["meta"], dict):
        raise UserError(f"{path}:{line}: meta must be a mapping")
    return kind


def _problem(path: Path, line: int, row: dict, kind: str, pid: str) -> Problem:
    from harness.evaluation.grading import check_gold

    question = row["question"].strip()
    gold = row["gold"]
    meta = {**(row.get("meta") or {}), "file_line": line}
    if kind == "choice":
        options = [str(o).strip() for o in row["options"]]
        letter = _choice_gold(path, line, gold, options)
        question += "\n\n" + "\n".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))
        gold = letter
    try:
        gold = check_gold(kind, gold)
    except UserError as e:
        raise UserError(f"{path}:{line}: {e}") from None
    return Problem(id=pid, question=question, gold=gold, meta=meta)


def _choice_gold(path: Path, line: int, gold, options: list[str]) -> str:
    g = str(gold).strip()
    if g in options and not (len(g) == 1 and g.upper() in LETTERS):
        return LETTERS[options.index(g)]
    letter = g.strip("()").upper()
    if len(letter) == 1 and letter in LETTERS[:len(options)]:
        return letter
    raise UserError(f"{path}:{line}: gold {g!r} is neither a letter A-{LETTERS[len(options) - 1]} nor the text of one "
                    "of the options")
