"""Evaluation suites (`evals/<preset>.yaml`): which recipes, benchmarks, budgets and comparisons a
preset runs. Declarative, like lm-evaluation-harness task configs; unknown keys are rejected."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"backend", "dtype", "tensor_parallel_size", "recipes", "accelerate_config", "base_model", "benchmarks",
        "thinking_budget", "answer_budget", "max_new_tokens", "wait", "temperature", "batch_size", "step_curve",
        "paired", "budget_sweep", "revision", "tokenizer", "max_model_len", "gpu_memory_utilization",
        "enforce_eager", "enable_prefix_caching", "vllm_version",
        "base_protocol", "auto_cap_scope", "samples", "top_p", "top_k", "min_p", "presence_penalty",
        "repetition_penalty", "seed", "aggregates",
        "thinking_format", "chat_template_kwargs", "benchmark_files"}
BASE_PROTOCOLS = ("plain", "s1")
AUTO_CAP_SCOPES = ("benchmark", "suite")


@dataclass
class Suite:
    name: str
    path: Path
    backend: str
    recipes: dict[str, str]
    base_model: str
    benchmarks: dict[str, int | None]
    thinking_budget: int | str | None
    answer_budget: int | None
    max_new_tokens: int
    wait: int = 0
    temperature: float = 0.0
    batch_size: int | None = None
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    accelerate_config: str | None = None
    step_curve: dict | None = None
    paired: list[list[str]] = field(default_factory=list)
    budget_sweep: dict | None = None
    # engine options (harness.evaluation.engine.ENGINE_OPTIONS; None = the backend's default)
    revision: str | None = None                # of base_model (a hub id); checkpoints are local folders
    tokenizer: str | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    enforce_eager: bool | None = None
    enable_prefix_caching: bool | None = None
    vllm_version: str | None = None            # the vLLM release line the protocol was reproduced with (a
                                               # version prefix, e.g. "0.6"); another one is a listed deviation
    # How the untrained base row is evaluated: "plain" (chat template, no think prefix, no thinking
    # cap: the whole response is the answer; how the paper's Qwen2.5-32B-Instruct row was made) or
    # "s1" (the same prompt and budget as the fine-tunes).
    base_protocol: str = "plain"
    # "auto" thinking cap: longest prompt of each benchmark ("benchmark", as `iwsft eval`) or of all
    # the suite's benchmarks together ("suite", as s1's single lm-eval run computed it).
    auto_cap_scope: str = "benchmark"
    # Sampling, as `iwsft eval`'s flags of the same names (vLLM's meaning on every backend), and the
    # aggregates over the samples each run reports (avg@K, maj@K, pass@K: harness.evaluation.aggregates).
    samples: int = 1
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int = 0
    aggregates: list[str] = field(default_factory=list)
    # The thinking format of the budget-forced rows (generation.prompts.PRESETS: s1, think-tags, qwen3) and
    # the chat template's variables for every row (e.g. {"enable_thinking": true}).
    thinking_format: str = "s1"
    chat_template_kwargs: dict | None = None
    # Benchmarks from files (name: path, relative to this suite's folder), registered as benchmarks
    # (harness/evaluation/benchmarks/_files.py); each is evaluated, with its limit under `benchmarks:`
    # when listed there, else on all its problems.
    benchmark_files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self._register_files()
        self.all_benchmarks = list(self.benchmarks)   # before any are skipped for lack of access
        from harness.evaluation.aggregates import parse_aggregates
        from harness.evaluation.generation.sampling import check_sampling

        try:
            check_sampling(self.top_k, self.min_p, self.presence_penalty, self.repetition_penalty)
            parse_aggregates(self.aggregates, self.samples)
        except UserError as e:
            raise UserError(f"{self.path}: {str(e).replace('--', '')}") from None
        if self.base_protocol not in BASE_PROTOCOLS:
            raise UserError(f"{self.path}: base_protocol {self.base_protocol!r} is not one of {', '.join(BASE_PROTOCOLS)}")
        if self.auto_cap_scope not in AUTO_CAP_SCOPES:
            raise UserError(f"{self.path}: auto_cap_scope {self.auto_cap_scope!r} is not one of {', '.join(AUTO_CAP_SCOPES)}")
        from harness.evaluation.generation.formats import parse_chat_template_kwargs, resolve_format

        self.chat_template_kwargs = parse_chat_template_kwargs(self.chat_template_kwargs)
        resolve_format(self.thinking_format, self.chat_template_kwargs)

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

    def engine_options(self, model: str) -> dict:
        """EvalConfig keywords of the engine options for evaluating `model` in this suite."""
        return {"revision": self.revision if model == self.base_model else None, "tokenizer": self.tokenizer,
                "max_model_len": self.max_model_len, "gpu_memory_utilization": self.gpu_memory_utilization,
                "enforce_eager": self.enforce_eager, "enable_prefix_caching": self.enable_prefix_caching}

    def engine_deviations(self) -> list[str]:
        """Where this machine's engine differs from the one the suite pins (for the report's deviations)."""
        if not self.vllm_version:
            return []
        from harness.core.versions import version_of
        from harness.evaluation.generation import resolve_backend_kind

        if resolve_backend_kind(self.backend) != "vllm":
            return [f"Generation engine: {resolve_backend_kind(self.backend)}, not vLLM {self.vllm_version}.x, which "
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
        known = sorted(p.stem for p in (ROOT / "evals").glob("*.yaml"))
        raise UserError(f"no evaluation suite {preset!r} ({path}); presets: {', '.join(known)}")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - KEYS
    if unknown:
        k = sorted(unknown)[0]
        close = difflib.get_close_matches(k, KEYS, n=1)
        raise UserError(f"unknown key {k!r} in {path}" + (f"; did you mean {close[0]!r}?" if close else ""))
    try:
        return Suite(name=path.stem, path=path, **data)
    except TypeError as e:
        raise UserError(f"{path}: {e}") from None
