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
        self._longest: dict[str, int] = {}
        self.aggregates: dict[str, dict[str, dict]] = {}   # model -> benchmark -> the suite's aggregates

    def config(self, model: str, bench: str, limit: int | None, *, out: str = EVAL_OUT,
               thinking_budget=None, wait=None, protocol: str = "s1", budget_mode: str | None = None,
               ids: list[str] | None = None) -> EvalConfig:
        """The suite's settings for one run. protocol "plain": no think prefix, no thinking phase, no
        cap (the suite's base_protocol for the base row); "s1": the suite's budget forcing."""
        s = self.suite
        plain = protocol == "plain"
        tb = s.settings.thinking_budget if thinking_budget is None else thinking_budget
        run = dict(benchmarks=[bench], limit=limit, out=out, summary=False, gpqa_csv=os.environ.get("IWSFT_GPQA_CSV"),
                   **({"ids": list(ids)} if ids else {}))
        if plain:
            return s.config(model, **run, delimiters="plain", thinking_budget=None, wait=0)
        if budget_mode is not None:      # Figure 2's own mode (its suite block may differ from Table 1's)
            run["budget_mode"] = budget_mode
        return s.config(model, **run, thinking_budget=tb, wait=s.settings.wait if wait is None else wait,
                        longest_prompt=self._suite_longest(model) if tb == "auto" and s.auto_cap_scope == "suite" else None)

    def _suite_longest(self, model: str) -> int:
        """Longest prompt of the suite's thinking format (think prefix included) over every problem of every benchmark of the
        suite, for the "auto" cap: s1 computed it over all the requests of its one lm-eval run."""
        if model not in self._longest:
            from harness.evaluation.benchmarks import load_benchmark

            probe = self.suite.config(model)
            engine = self._engine_for(probe)      # the tokenizer only; the model loads if generation needs it
            csv = os.environ.get("IWSFT_GPQA_CSV")
            self._longest[model] = max(len(engine.prompt_ids(p, probe))
                                       for b in self.suite.benchmarks for p in load_benchmark(b, gpqa_csv=csv))
        return self._longest[model]

    def _engine_for(self, cfg) -> Engine:
        if self._engine is None or self._engine.model != cfg.model:
            self.close()
            self._engine = Engine.for_config(cfg)
        return self._engine

    def run(self, model: str, bench: str, limit: int | None, **kw) -> Run | None:
        """One benchmark of one model; its Run, or None when the benchmark is unavailable here."""
        cfg = self.config(model, bench, limit, **kw)
        m = run_eval(cfg, engine=self._engine_for(cfg))[bench]
        if m.get("aggregates"):
            self.aggregates.setdefault(model, {})[bench] = m["aggregates"]
        return None if "skipped" in m else load_run(Path(m["run_dir"]), ids=m["selected_ids"])   # what was asked

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> "Evaluations":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
