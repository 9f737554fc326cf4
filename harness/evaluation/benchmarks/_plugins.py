"""Benchmarks shipped by other packages, through the `iwsft.benchmarks` entry-point group.

A package declares, in its pyproject.toml,

    [project.entry-points."iwsft.benchmarks"]
    mybench = "mypkg.benchmarks:BENCHMARK"

where the object is a `Benchmark`, a list of them, or a function of no arguments returning either.
They are registered with the built-in ones on first use of the registry (harness.evaluation.benchmarks).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Iterator

from harness.core.errors import UserError

GROUP = "iwsft.benchmarks"


def plugin_benchmarks() -> Iterator[tuple["Benchmark", str]]:  # noqa: F821 (import cycle: _core imports us)
    """(benchmark, "package X (entry point Y)") for every installed plugin, in entry-point name order."""
    from harness.evaluation.benchmarks._core import Benchmark

    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        dist = getattr(ep, "dist", None)
        origin = f"package {dist.name if dist is not None else '?'} (entry point {ep.name} = {ep.value})"
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, Benchmark):
                obj = obj()
        except Exception as e:      # a broken plugin: name it, do not take the harness down with a traceback
            raise UserError(f"benchmark plugin from {origin} failed to load ({type(e).__name__}: {e}); "
                            "fix or uninstall that package") from None
        specs = [obj] if isinstance(obj, Benchmark) else list(obj) if isinstance(obj, (list, tuple)) else None
        if not specs or not all(isinstance(s, Benchmark) for s in specs):
            raise UserError(f"benchmark plugin from {origin} gives {type(obj).__name__}, not a Benchmark or a list "
                            "of them (harness.evaluation.benchmarks.Benchmark); fix or uninstall that package")
        for spec in specs:
            yield spec, origin
