"""Benchmarks for offline evaluation: a declarative registry in the style of lm-evaluation-harness
tasks. Each benchmark is one module here defining `BENCHMARK = Benchmark(...)` (see _core.py);
`load_benchmark(name, limit=..., ids=...)` returns `Problem`s.

Shipped: aime24, math500 (JSONL in harness/data, checksums in harness/data/SOURCES.md);
gpqa_diamond (gated: from the hub with the user's token, or a local CSV; never written out).
A user's own file (JSONL/YAML) registers through `register_file` (_files.py); other packages ship
benchmarks through the `iwsft.benchmarks` entry-point group (_plugins.py).
"""

from harness.evaluation.benchmarks._core import (
    Benchmark,
    BenchmarkUnavailable,
    Problem,
    check_options,
    clusters_for,
    fingerprint,
    get_benchmark,
    load_benchmark,
    names,
    register,
    report_order,
    select,
    title,
)
from harness.evaluation.benchmarks._files import parse_file_arg, register_file, register_files

__all__ = [
    "Benchmark",
    "BenchmarkUnavailable",
    "Problem",
    "check_options",
    "clusters_for",
    "fingerprint",
    "get_benchmark",
    "load_benchmark",
    "names",
    "parse_file_arg",
    "register",
    "register_file",
    "register_files",
    "report_order",
    "select",
    "title",
]
