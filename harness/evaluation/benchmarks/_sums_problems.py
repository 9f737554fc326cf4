"""The `sums` task of the evidence preset: two-digit addition (10..99 + 10..99) with a held-out split
built so that a held-out score is evidence of addition, not of recall.

- Unordered operand pairs: 4,095. A pair goes to the held-out side when its SUM is one of a fixed,
  seeded 30% of the 179 possible sums (20..198): held-out answers are never training answers, so
  a model that memorised answer values gains nothing on them (and the held-out answers spread over
  the whole range instead of piling up on a few values).
- Phrasing templates are split too: 5 for training, 3 only in the held-out set.
- One problem per unordered pair on each side (its order and template drawn by the same seed), so
  every held-out problem is its own cluster: n problems are n independent units.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TRAIN_TEMPLATES = (
    "What is {a} + {b}?",
    "Compute {a} + {b}.",
    "Calculate {a} + {b}. Give the result as a number.",
    "Find the value of {a} + {b}.",
    "Evaluate {a} + {b}.",
)
TEST_TEMPLATES = (
    "What do you get when you add {a} and {b}?",
    "Add {a} and {b}. What is the total?",
    "What is the sum of {a} and {b}?",
)
SEED = 20261207          # fixed once; never tuned
HELD_OUT_SHARE = 0.3


@dataclass(frozen=True)
class SumProblem:
    id: str
    question: str
    answer: int
    template: int


def held_out_sums() -> frozenset[int]:
    values = list(range(20, 199))
    random.Random(SEED).shuffle(values)
    return frozenset(values[: round(HELD_OUT_SHARE * len(values))])


def problems(split: str) -> list[SumProblem]:
    """Every problem of `split` ("train" or "test"), in a fixed seeded order."""
    held = held_out_sums()
    pairs = [(a, b) for a in range(10, 100) for b in range(a, 100) if ((a + b) in held) == (split == "test")]
    rng = random.Random(f"{SEED}-{split}")
    rng.shuffle(pairs)
    templates = TEST_TEMPLATES if split == "test" else TRAIN_TEMPLATES
    out = []
    for a, b in pairs:
        x, y = (a, b) if rng.random() < 0.5 else (b, a)
        t = rng.randrange(len(templates))
        offset = len(TRAIN_TEMPLATES) if split == "test" else 0      # template numbers are global
        out.append(SumProblem(f"sums-{x}+{y}-t{t + offset}", templates[t].format(a=x, b=y), x + y, t + offset))
    return out
