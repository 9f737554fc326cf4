"""Evaluation suites (`evals/<preset>.yaml`): which recipes, benchmarks, budgets and comparisons a
preset runs. Declarative, like lm-evaluation-harness task configs; unknown keys are rejected."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path


from harness.core.errors import UserError
from harness.paper import preset_names
from harness.evaluation.config import EvalConfig, validate_settings

ROOT = Path(__file__).resolve().parents[2]
# The suite's own keys: what the paper's jobs run and compare. Every other key is a generation
# setting: a field of EvalConfig (harness/evaluation/config.py, where each is documented), under the
# same name, validated by the same code as `iwsft eval`'s flags.
PAPER_KEYS = {"recipes", "accelerate_config", "base_model", "benchmarks", "step_curve", "paired", "budget_sweep",
              "vllm_version", "base_protocol", "auto_cap_scope", "benchmark_files", "curate", "seeds"}
# EvalConfig fields each run sets for itself (model, what it selects, where it writes, progress).
PER_RUN = {"model", "benchmarks", "limit", "ids", "out", "shard", "progress", "summary", "gpqa_csv", "longest_prompt",
           "benchmark_files", "benchmark_options", "adapter"}
ALIASES = {"thinking_format": "delimiters", "total_budget": "max_new_tokens"}   # suite key -> EvalConfig field (as the flags)
SETTINGS = {f.name for f in fields(EvalConfig)} - PER_RUN
KEYS = PAPER_KEYS | SETTINGS | set(ALIASES)
BASE_PROTOCOLS = ("plain", "s1")
AUTO_CAP_SCOPES = ("benchmark", "suite")


@dataclass
class Suite:
    name: str
    path: Path
    recipes: dict[str, str]
    base_model: str
    benchmarks: dict[str, int | None]
    # The generation settings of every run of the suite (model, benchmark, limit and out are set per
    # run by paper.evaluations); `revision` applies to base_model only (checkpoints are local folders).
    settings: EvalConfig
    accelerate_config: str | None = None
    step_curve: dict | None = None
    paired: list[list[str]] = field(default_factory=list)
    budget_sweep: dict | None = None
    vllm_version: str | None = None            # the vLLM release line the protocol was reproduced with (a
                                               # version prefix, e.g. "0.6"); another one is a listed deviation
    # How the untrained base row is evaluated: "plain" (chat template, no think prefix, no thinking
    # cap: the whole response is the answer; how the paper's Qwen2.5-32B-Instruct row was made) or
    # "s1" (the same prompt and budget as the fine-tunes).
    base_protocol: str = "plain"
    # "auto" thinking cap: longest prompt of each benchmark ("benchmark", as `iwsft eval`) or of all
    # the suite's benchmarks together ("suite", as s1's single lm-eval run computed it).
    auto_cap_scope: str = "benchmark"
    # Benchmarks from files (name: path, relative to this suite's folder), registered as benchmarks
    # (harness/evaluation/benchmarks/_files.py); each is evaluated, with its limit under `benchmarks:`
    # when listed there, else on all its problems.
    benchmark_files: dict[str, str] = field(default_factory=dict)
    # D+ made by the preset itself before training (harness.paper.curate, as `iwsft curate`): task, samples,
    # temperature, seed, require_natural_close, thinking_budget, answer_budget, limit, out (the recipes'
    # dataset), min_rows (fewer kept rows stop the job, naming the fix). None: the recipes' data is given.
    curate: dict | None = None
    seeds: int = 1                             # training seeds per recipe when --seeds is not given

    def __post_init__(self):
        self._register_files()
        self.all_benchmarks = list(self.benchmarks)   # before any are skipped for lack of access
        if self.base_protocol not in BASE_PROTOCOLS:
            raise UserError(f"{self.path}: base_protocol {self.base_protocol!r} is not one of {', '.join(BASE_PROTOCOLS)}")
        if self.auto_cap_scope not in AUTO_CAP_SCOPES:
            raise UserError(f"{self.path}: auto_cap_scope {self.auto_cap_scope!r} is not one of {', '.join(AUTO_CAP_SCOPES)}")
        try:
            validate_settings(self.settings)
        except UserError as e:       # the CLI's flag names, said as this file's keys
            raise UserError(f"{self.path}: {re.sub(r'--([a-z-]+)', lambda m: m[1].replace('-', '_'), str(e))}") from None

    def _register_files(self) -> None:
        from harness.evaluation.benchmarks import register_files

        if not isinstance(self.benchmark_files, dict):
            raise UserError(f"{self.path}: benchmark_files must map a name to a file, e.g. benchmark_files: "
                            "{aime25: benchmarks/aime25.jsonl}")
        self.benchmarks = dict(self.benchmarks or {})
        files = {}
        for name, rel in self.benchmark_files.items():
            p = Path(str(rel)).expanduser()
            files[str(name)] = str(p if p.is_absolute() else Path(self.path).parent / p)
            self.benchmarks.setdefault(str(name), None)
        register_files(files)

    def config(self, model: str, **run) -> EvalConfig:
        """The EvalConfig of one run of `model`: the suite's settings plus the run's own fields
        (benchmarks, limit, out, ...; a key of the settings given here overrides the suite's)."""
        revision = self.settings.revision if model == self.base_model else None
        return replace(self.settings, model=model, revision=revision, **run)

    def engine_deviations(self) -> list[str]:
        """Where this machine's engine differs from the one the suite pins (for the report's deviations)."""
        if not self.vllm_version:
            return []
        from harness.core.versions import version_of
        from harness.evaluation.generation import resolve_backend_kind

        if resolve_backend_kind(self.settings.backend) != "vllm":
            return [f"Generation engine: {resolve_backend_kind(self.settings.backend)}, not vLLM {self.vllm_version}.x, which "
                    "reproduced s1's numbers."]
        have = version_of("vllm")
        if have and (have == self.vllm_version or have.startswith(self.vllm_version + ".")):
            return []
        return [f"vLLM {have}, not {self.vllm_version}.x: s1's numbers were reproduced with vLLM {self.vllm_version}.x "
                "(newer releases shifted AIME scores, simplescaling/s1 issue #134)."]

    def recipe_path(self, name: str) -> Path:
        p = Path(self.recipes[name])
        return p if p.is_absolute() else ROOT / p


def suite_path(preset: str) -> Path:
    p = Path(preset)
    if p.suffix in (".yaml", ".yml"):
        return p
    return ROOT / "evals" / f"{preset}.yaml"


def load_suite(preset: str) -> Suite:
    path = suite_path(preset)
    if not path.is_file():
        raise UserError(f"no evaluation suite {preset!r} ({path}); presets: {', '.join(preset_names())}")
    from harness.core.io import load_yaml_file

    data = load_yaml_file(path, "suite") or {}
    if not isinstance(data, dict):
        raise UserError(f"evaluation suite {path} must be a mapping of key: value")
    unknown = set(data) - KEYS
    if unknown:
        k = sorted(unknown)[0]
        close = difflib.get_close_matches(k, KEYS, n=1)
        raise UserError(f"unknown key {k!r} in {path}" + (f"; did you mean {close[0]!r}?" if close else ""))
    for alias, name in ALIASES.items():
        if alias in data and name in data:
            raise UserError(f"{path}: give {alias!r} or {name!r}, not both (the same setting)")
    settings = {ALIASES.get(k, k): data.pop(k) for k in list(data) if k in SETTINGS or k in ALIASES}
    missing = sorted({"recipes", "base_model", "benchmarks"} - set(data))
    if missing:
        raise UserError(f"{path}: missing key {missing[0]!r} (see evals/tiny.yaml for a complete suite)")
    try:
        return Suite(name=path.stem, path=path, settings=EvalConfig(model=data["base_model"], **settings), **data)
    except TypeError as e:
        raise UserError(f"{path}: {e}") from None
