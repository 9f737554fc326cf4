"""The benchmark registry: problems, benchmark specs, discovery, selection.

A benchmark is one module in `harness/evaluation/benchmarks/` (name not starting with "_") that defines
`BENCHMARK = Benchmark(...)`; modules are discovered on first use, so adding a benchmark touches
no other file. `load(options)` returns every problem in the benchmark's canonical order; subsets
(`limit`, `ids`) are taken here, the same way for every benchmark.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import pkgutil
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Iterable, Mapping, Sequence

from harness.core.errors import UserError


class BenchmarkUnavailable(UserError):
    """The benchmark's data cannot be loaded here (e.g. a gated dataset without access).
    The message says, on one line, how to provide it; the eval runner skips the benchmark."""


@dataclass(frozen=True)
class Problem:
    id: str
    question: str = field(repr=False)   # the user-message text given to the model
    gold: str
    meta: dict = field(default_factory=dict, compare=False)
    # Texts that must never leave memory for non-public benchmarks (question stem, options): the
    # runner redacts them from anything it writes. Empty for public benchmarks.
    private: tuple[str, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    load: Callable[[Mapping[str, Any]], list[Problem]]  # options -> all problems, canonical order
    grader: str                 # grading kind: "integer", "math" or "choice" (harness.evaluation.grading)
    public: bool = True         # False: question text must never be printed, logged or written
    source: str = ""            # one line: where the data comes from
    options: tuple[str, ...] = ()  # loader option keys it reads (`iwsft eval --benchmark-option KEY=VALUE`)
    # Problem id -> key of its cluster of correlated problems (e.g. the phrasings of one arith operand
    # pair; also in each Problem's meta["cluster"]); None: every problem is independent.
    cluster_of: Callable[[str], str] | None = None
    title: str = ""             # its column title in reports (default: the name)
    report_order: int = 100     # left-to-right position in reports (then by name)
    # sha256 of the file a benchmark was read from (`iwsft eval --benchmark-file`; _files.py): it keys
    # the run folder, so an edited file never reuses old samples. "" for benchmarks defined in code.
    content_sha256: str = ""

    @property
    def display(self) -> str:
        return self.title or self.name


_REGISTRY: dict[str, Benchmark] = {}
_DISCOVERED = False


def register(benchmark: Benchmark) -> Benchmark:
    """Add a benchmark defined outside `harness/evaluation/benchmarks/` (modules inside are discovered)."""
    if benchmark.name in _REGISTRY and _REGISTRY[benchmark.name] is not benchmark:
        raise ValueError(f"benchmark {benchmark.name!r} registered twice")
    _REGISTRY[benchmark.name] = benchmark
    return benchmark


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import harness.evaluation.benchmarks as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"harness.evaluation.benchmarks.{info.name}")
        spec = getattr(module, "BENCHMARK", None)
        if isinstance(spec, Benchmark):
            register(spec)
    from harness.evaluation.benchmarks._plugins import plugin_benchmarks

    builtin = set(_REGISTRY)
    for spec, origin in plugin_benchmarks():
        if spec.name in _REGISTRY:
            what = "a built-in benchmark" if spec.name in builtin else "another plugin's benchmark"
            raise UserError(f"benchmark {spec.name!r} from {origin} has the name of {what}; rename it in that package "
                            "or uninstall the package")
        register(spec)
    _DISCOVERED = True


def names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def report_order(benchmarks) -> list[str]:
    """The given benchmark names in report column order (unregistered names last, by name)."""
    _discover()
    return sorted(benchmarks, key=lambda b: (_REGISTRY[b].report_order if b in _REGISTRY else 1000, b))


def title(name: str) -> str:
    _discover()
    return _REGISTRY[name].display if name in _REGISTRY else name


def lmeval_name_hint(name) -> str:
    """'; ...' naming the benchmark behind an lm-eval task name (iwsft_arith -> arith), else ''."""
    _discover()
    if isinstance(name, str) and name.startswith("iwsft_") and name[len("iwsft_"):] in _REGISTRY:
        return f"; use {name[len('iwsft_'):]!r} ({name} is the lm-eval task's name)"
    return ""


def get_benchmark(name: str) -> Benchmark:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = lmeval_name_hint(name)
        raise UserError(f"unknown benchmark {name!r}{hint or '; known: ' + ', '.join(names())}") from None


def clusters_for(name: str, problem_ids: Iterable[str]) -> dict[str, str] | None:
    """Problem id -> cluster key for a benchmark whose problems are correlated, from the ids alone
    (no data is loaded); None when its problems are independent or the benchmark is unknown."""
    spec = _REGISTRY.get(name) if _DISCOVERED else None
    if spec is None:
        try:
            spec = get_benchmark(name)
        except UserError:
            return None
    if spec.cluster_of is None:
        return None
    return {i: spec.cluster_of(i) for i in problem_ids}


def check_options(benchmarks: Iterable[str], options: Mapping[str, Any]) -> None:
    """A UserError (with a did-you-mean) for an option key that none of `benchmarks` reads: a typo
    would otherwise be ignored silently and the run would use the default."""
    import difflib

    benchmarks = list(benchmarks)
    allowed = {o: b for b in benchmarks for o in get_benchmark(b).options}
    for key in options:
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, list(allowed), n=1)
        if close:
            hint = f"; did you mean {close[0]!r}?"
        elif allowed:
            hint = f"; options of {', '.join(benchmarks)}: {', '.join(sorted(allowed))}"
        else:
            owners = sorted(n for n in names() if key in _REGISTRY[n].options)
            if owners:
                hint = f"; it applies only to {', '.join(owners)} (not in --benchmarks): add one there or drop the option"
            else:
                hint = f"; {', '.join(benchmarks)} take{'s' if len(benchmarks) == 1 else ''} no options"
        raise UserError(f"--benchmark-option {key!r} is not an option of {', '.join(benchmarks)}{hint}")


def select(problems: Sequence[Problem], *, limit: int | None = None,
           ids: Iterable[str] | None = None, benchmark: str = "") -> list[Problem]:
    """Explicit `ids` (in the order given, duplicates dropped) then the first `limit`."""
    out = list(problems)
    if ids is not None:
        wanted = list(dict.fromkeys(str(i) for i in ids))
        by_id = {p.id: p for p in out}
        unknown = [i for i in wanted if i not in by_id]
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else "")
            raise UserError(f"unknown problem id(s) for {benchmark or 'benchmark'}: {shown}")
        out = [by_id[i] for i in wanted]
    if limit is not None:
        if limit < 0:
            raise UserError(f"--limit must be >= 0, got {limit}")
        if isinstance(limit, float) and limit < 1:     # lm-eval's fraction, rounded up as it does
            limit = math.ceil(len(out) * limit)
        out = out[:int(limit)]
    return out


def load_benchmark(name: str, *, limit: int | None = None, ids: Iterable[str] | None = None,
                   gpqa_csv: str | None = None, **options: Any) -> list[Problem]:
    """Problems of benchmark `name`: all, the first `limit`, or the given `ids` (UserError naming
    unknown ones). Raises BenchmarkUnavailable when the data cannot be had (gated GPQA)."""
    spec = get_benchmark(name)
    problems = spec.load({"gpqa_csv": gpqa_csv, **options})
    return select(problems, limit=limit, ids=ids, benchmark=name)


def fingerprint(problems: Sequence[Problem]) -> str:
    """sha256 over ids, questions and golds: identifies the data without revealing it."""
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([p.id, p.question, p.gold], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def read_packaged_jsonl(filename: str) -> list[dict]:
    """Rows of `harness/data/<filename>` (shipped with the package)."""
    text = resources.files("harness").joinpath("data", filename).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def packaged_sha256(filename: str) -> str:
    data = resources.files("harness").joinpath("data", filename).read_bytes()
    return hashlib.sha256(data).hexdigest()
