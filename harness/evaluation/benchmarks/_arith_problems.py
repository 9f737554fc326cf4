"""`arith`: a seeded synthetic arithmetic task on which the embedded 135M model succeeds sometimes.

This is the laptop-scale testbed of the paper's setting (docs/method.md#the-tiny-preset: SmolLM2-135M solves
one-digit addition about a quarter of the time when sampling), so "sample from the reference model,
keep what the grader accepts, train on it" visibly moves held-out accuracy.

Train and test are disjoint at the level of the UNORDERED operand pair: {a, b} is split once by a
fixed seed, so "3 + 5" and "5 + 3" are always on the same side (a model that learned one has not
seen the other's answer only up to commutativity). Each split is phrased with every template. Test
items sharing an unordered pair are correlated (one-digit addition: 55 unordered pairs, 28 held out
= 52 ordered pairs x 6 phrasings = 312 test problems), so reports resample and test pairs
(`cluster_of`), not rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from harness.core.errors import UserError

TEMPLATES = (
    "What is {a} {op} {b}?",
    "Compute {a} {op} {b}.",
    "Calculate {a} {op} {b}. Give the result as a number.",
    "What do you get when you work out {a} {op} {b}?",
    "Find the value of {a} {op} {b}.",
    "Evaluate {a} {op} {b}.",
)

LEVELS = {
    # name: (operator symbol, operand range, result function)
    "add1": ("+", range(0, 10), lambda a, b: a + b),
    "add2": ("+", range(10, 100), lambda a, b: a + b),
    "sub1": ("-", range(0, 10), lambda a, b: a - b),
    "mul1": ("*", range(0, 10), lambda a, b: a * b),
}
SPLIT_SEED = 20250717   # fixed once; never tuned


@dataclass(frozen=True)
class ArithProblem:
    id: str
    question: str
    answer: int


def problems(level: str = "add1", split: str = "test", max_pairs: int | None = None) -> list[ArithProblem]:
    """All problems of a level and split, in a fixed order (template-major, so the first N problems
    are one phrasing of N ordered pairs). Unordered pairs are split 50/50 by SPLIT_SEED; `max_pairs`
    keeps the first unordered pairs of the split."""
    if level not in LEVELS:
        raise UserError(f"unknown arith level {level!r}; choose one of {', '.join(LEVELS)}")
    if split not in ("train", "test"):
        raise UserError(f"arith split must be train or test, got {split!r}")
    op, rng, fn = LEVELS[level]
    unordered = [(a, b) for a in rng for b in rng if a <= b]
    random.Random(SPLIT_SEED).shuffle(unordered)
    half = len(unordered) // 2
    kept = unordered[half:] if split == "test" else unordered[:half]
    if max_pairs is not None:
        kept = kept[:max_pairs]
    chosen = [p for a, b in kept for p in ([(a, b), (b, a)] if a != b else [(a, b)])]
    out = []
    for t, template in enumerate(TEMPLATES):
        for a, b in chosen:
            out.append(ArithProblem(f"{level}-{a}{op}{b}-t{t}", template.format(a=a, op=op, b=b), fn(a, b)))
    return out
