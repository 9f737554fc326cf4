"""The paper jobs' evaluations, one engine per model.

Table 1, the step curve, Figure 2 and `iwsft table1` ask for many (model, benchmark, budget) runs.
Each model's work goes through one `Engine` (the model loads once, and only if something is left to
generate); when the jobs move on to the next model, the previous engine is closed and its memory
released first. Jobs therefore ask for one model's runs together, models one after another.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.evaluation.config import EvalConfig
from harness.evaluation.engine import Engine
from harness.evaluation.runner import run_eval
from harness.evaluation.store import Run, load_run
from harness.paper.suite import Suite

EVAL_OUT = "runs/eval"


class Evaluations:
    def __init__(self, suite: Suite):
        self.suite = suite
        self._engine: Engine | None = None

    def config(self, model: str, bench: str, limit: int | None, *, out: str = EVAL_OUT,
               thinking_budget=None, wait=None) -> EvalConfig:
        s = self.suite
        return EvalConfig(model=model, benchmarks=[bench], backend=s.backend, limit=limit,
                          max_new_tokens=s.max_new_tokens,
                          thinking_budget=s.thinking_budget if thinking_budget is None else thinking_budget,
                          answer_budget=s.answer_budget, wait=s.wait if wait is None else wait,
                          temperature=s.temperature, out=out, dtype=s.dtype,
                          tensor_parallel_size=s.tensor_parallel_size, batch_size=s.batch_size,
                          gpqa_csv=os.environ.get("IWSFT_GPQA_CSV"), summary=False, **s.engine_options(model))

    def run(self, model: str, bench: str, limit: int | None, **kw) -> Run | None:
        """One benchmark of one model; its Run, or None when the benchmark is unavailable here."""
        cfg = self.config(model, bench, limit, **kw)
        if self._engine is None or self._engine.model != model:
            self.close()
            self._engine = Engine.for_config(cfg)
        m = run_eval(cfg, engine=self._engine)[bench]
        return None if "skipped" in m else load_run(Path(m["run_dir"]), ids=m["selected_ids"])   # what was asked

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> "Evaluations":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
