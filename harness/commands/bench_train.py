"""`iwsft bench-train`: `iwsft train` against `iwsft bench` on the same shape and options (harness/perf/train_vs_bench.py)."""

from __future__ import annotations

HELP = ("Time `iwsft train` against `iwsft bench` on one shape and options; print and save the ratios of step time "
        "and peak memory (targets <= 1.05x, <= 1.02x)")


def add_arguments(p):
    from harness.perf.train_vs_bench import add_arguments as add

    add(p)


def run(args) -> int:
    from harness.perf.train_vs_bench import run as go

    return go(args)
