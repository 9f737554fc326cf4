"""What an evaluation run is asked to do: one config type for `iwsft eval`, the suites and curate.

`validate` is the one check of a config, called where it is made (the CLI, the suites) and again by
`run_eval` for library callers; a bad value is one UserError line before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from harness.core.errors import UserError
from harness.evaluation.benchmarks import get_benchmark

DEFAULT_BENCHMARKS = ("aime24", "math500", "gpqa_diamond")


@dataclass
class EvalConfig:
    model: str
    benchmarks: Sequence[str] = DEFAULT_BENCHMARKS
    backend: str = "auto"                      # auto | hf | vllm
    limit: int | float | None = None           # first N problems of each benchmark (a float < 1: that fraction)
    ids: Sequence[str] | None = None           # explicit ids; "bench:id" scopes one to a benchmark
    max_new_tokens: int = 32768                # the TOTAL budget per request, prompt included (s1's
                                               # max_gen_toks; `--total-budget`): the "auto" cap and the
                                               # answer's room count the prompt in it
    thinking_budget: int | str | None = "auto"  # thinking cap: int, "auto" (s1) or None (no cap)
    answer_budget: int | None = None           # max answer tokens; None = what is left of the total
    wait: int = 0                              # forced "Wait"s when thinking stops on its own
    longest_prompt: int | None = None          # "auto" cap: the longest prompt to subtract; None = the
                                               # longest of the benchmark (the paper suite passes the
                                               # longest over all its benchmarks, as s1's single run)
    budget_mode: str = "independent"           # "independent" (exact cap) | "s1-compat" (s1's loop)
    delimiters: str = "s1"                     # thinking format: a preset of generation.prompts.PRESETS
                                               # (s1 | think-tags | qwen3 | plain: no thinking, no cap)
    chat_template_kwargs: dict | None = None   # variables for the chat template (e.g. {"enable_thinking": true});
                                               # part of the run key only when given
    samples: int = 1                           # K samples per problem
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0                             # 0 (or -1) = off; these four with vLLM's meaning
    min_p: float = 0.0                         # on both backends (generation/sampling.py)
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    aggregates: Sequence[str] = ()             # e.g. avg@16, maj@16, pass@1 (harness.evaluation.aggregates)
    seed: int = 0
    gpqa_csv: str | None = None
    benchmark_files: dict = field(default_factory=dict)  # name -> JSONL/YAML file, registered as benchmarks
                                               # (benchmarks/_files.py); list their names in `benchmarks`
    benchmark_options: dict = field(default_factory=dict)  # extra loader options (e.g. arith_level);
                                               # they reach the hash through the data fingerprint
    out: str = "runs/eval"
    dtype: str = "auto"                        # auto = one explicit dtype per device on every backend
                                               # (generation/precision.py); the resolved one keys the run
    tensor_parallel_size: int = 1
    # engine options (harness.evaluation.engine.ENGINE_OPTIONS); None = the backend's default
    revision: str | None = None                # hub branch, tag or commit of --model
    adapter: str | None = None                 # a peft LoRA adapter (folder or hub id) on --model
                                               # (generation/adapter.py); its files' fingerprint keys the run
    tokenizer: str | None = None               # another tokenizer (folder or hub id) for prompts and the engine
    max_model_len: int | None = None           # vLLM: context length (default: the model's)
    gpu_memory_utilization: float | None = None  # vLLM: memory fraction reserved (on a CPU: of RAM)
    enforce_eager: bool | None = None          # vLLM: no CUDA graphs / compilation
    enable_prefix_caching: bool | None = None  # vLLM: reuse the KV cache of shared prefixes
    batch_size: int | None = None              # requests per backend call (None: backend default)
    system: str | None = None                  # system message; None = chat template's default
    grade_timeout_s: float = 10.0
    grade_workers: int | None = None
    shard: tuple[int, int] | None = None       # (K, N): this worker's share of the selection (--shard K/N)
    progress: bool = True
    summary: bool = True                       # print the rich summary table



def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N), 1 <= K <= N; a UserError in one line otherwise."""
    k, sep, n = str(text).strip().partition("/")
    try:
        if not sep:
            raise ValueError
        shard = (int(k), int(n))
    except ValueError:
        raise UserError(f"--shard expects K/N (this worker's number K of N workers, e.g. 1/4), got {text!r}") from None
    check_shard(shard)
    return shard


def check_shard(shard) -> None:
    k, n = shard
    if n < 1 or not 1 <= k <= n:
        raise UserError(f"--shard {k}/{n}: K must be between 1 and N (N >= 1), e.g. --shard 1/{max(n, 2)} ... "
                        f"--shard {max(n, 2)}/{max(n, 2)}")


def validate(cfg: EvalConfig) -> None:
    """Every check of a run's config, before any model loads."""
    if cfg.benchmark_files:
        from harness.evaluation.benchmarks import register_files

        register_files(cfg.benchmark_files)
    if not cfg.benchmarks:
        raise UserError("no benchmark given; use --benchmarks aime24,math500,gpqa_diamond or --benchmark-file PATH")
    for b in cfg.benchmarks:
        get_benchmark(b)
    if len(set(cfg.benchmarks)) != len(cfg.benchmarks):
        raise UserError(f"--benchmarks lists a benchmark twice: {','.join(cfg.benchmarks)}")
    validate_settings(cfg)
    if cfg.longest_prompt is not None and cfg.longest_prompt < 1:
        raise UserError(f"longest_prompt must be >= 1 (got {cfg.longest_prompt})")
    if cfg.limit is not None and cfg.limit < 1 and not (isinstance(cfg.limit, float) and cfg.limit > 0):
        raise UserError(f"--limit must be a count >= 1 or a fraction between 0 and 1 of each benchmark's problems, "
                        f"got {cfg.limit}; leave it out to evaluate them all")
    if cfg.shard is not None:
        check_shard(cfg.shard)
    from harness.evaluation.generation import backend_class, resolve_backend_kind

    backend_class(resolve_backend_kind(cfg.backend)).check_available()
    if cfg.revision is not None:
        from harness.core.models import resolve_model

        if resolve_model(cfg.model).kind != "hub":
            raise UserError(f"--revision applies to hub models; {cfg.model!r} is a local folder or alias "
                            "(check out the revision there instead)")
    if cfg.adapter is not None:
        from harness.evaluation.generation.adapter import check_adapter

        check_adapter(cfg.adapter, cfg.model, resolve_backend_kind(cfg.backend))


def validate_settings(cfg: EvalConfig) -> None:
    """The checks of the generation settings alone (what a suite sets for all its runs): no model,
    benchmark or installed engine needed."""
    from harness.evaluation.generation import backend_class, resolve_backend_kind

    resolve_backend_kind(cfg.backend)           # a known name
    if cfg.budget_mode not in ("independent", "s1-compat"):
        raise UserError(f"--budget-mode must be independent or s1-compat, not {cfg.budget_mode!r}")
    from harness.evaluation.generation.formats import parse_chat_template_kwargs, resolve_format

    cfg.chat_template_kwargs = parse_chat_template_kwargs(cfg.chat_template_kwargs)
    delim = resolve_format(cfg.delimiters, cfg.chat_template_kwargs)
    if not delim.has_thinking and (isinstance(cfg.thinking_budget, int) or cfg.wait):
        off = " with enable_thinking=false" if delim.name != "plain" else ""
        raise UserError(f"--delimiters {delim.name}{off} generates without a thinking phase, so a thinking budget or "
                        "Wait does not apply; drop --thinking-budget/--wait, or use a thinking format")
    if cfg.samples < 1:
        raise UserError("--samples must be >= 1")
    if cfg.samples > 1 and cfg.temperature == 0:
        raise UserError("--samples > 1 needs --temperature > 0 (greedy samples would be identical)")
    if cfg.temperature < 0:
        raise UserError("--temperature must be >= 0")
    if cfg.max_new_tokens < 1:
        raise UserError("--total-budget must be >= 1")
    tb = cfg.thinking_budget
    if not (tb is None or tb == "auto" or (isinstance(tb, int) and not isinstance(tb, bool) and tb >= 1)):
        raise UserError(f"--thinking-budget must be a token count, 'auto' or 'none', not {tb!r}")
    if cfg.answer_budget is not None and cfg.answer_budget < 1:
        raise UserError("--answer-budget must be >= 1")
    if cfg.answer_budget is not None and cfg.answer_budget > cfg.max_new_tokens:
        raise UserError(f"--answer-budget {cfg.answer_budget} exceeds --total-budget {cfg.max_new_tokens}, the "
                        "total per request (prompt included); lower --answer-budget or raise --total-budget")
    if not 0 < cfg.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {cfg.top_p:g} (1 = no nucleus truncation)")
    from harness.evaluation.generation.sampling import check_sampling

    check_sampling(cfg.top_k, cfg.min_p, cfg.presence_penalty, cfg.repetition_penalty)
    from harness.evaluation.aggregates import parse_aggregates

    parse_aggregates(cfg.aggregates, cfg.samples)
    if cfg.wait < 0:
        raise UserError("--wait must be >= 0")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if cfg.tensor_parallel_size < 1:
        raise UserError("--tensor-parallel-size must be >= 1")
    from harness.evaluation.generation.precision import canonical

    canonical(cfg.dtype)                        # before any run folder is made
    _validate_engine_options(cfg, backend_class(resolve_backend_kind(cfg.backend)))


def _validate_engine_options(cfg: EvalConfig, cls) -> None:
    from harness.evaluation.engine import ENGINE_OPTIONS

    for key in ENGINE_OPTIONS:
        if getattr(cfg, key) is not None and key not in cls.options:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} applies to {', '.join(n for n in _backends_taking(key))} only, not the "
                            f"{cls.name} backend; drop it or use --backend vllm")
    if cfg.max_model_len is not None and cfg.max_model_len < 1:
        raise UserError("--max-model-len must be >= 1")
    if cfg.gpu_memory_utilization is not None and not 0 < cfg.gpu_memory_utilization <= 1:
        raise UserError(f"--gpu-memory-utilization must be in (0, 1], got {cfg.gpu_memory_utilization:g}")
    for key in ("revision", "tokenizer"):
        if getattr(cfg, key) is not None and not str(getattr(cfg, key)).strip():
            raise UserError(f"--{key} is empty; give a value or leave it out")


def _backends_taking(key: str) -> list[str]:
    from harness.evaluation.generation import BACKENDS, backend_class

    return [name for name in BACKENDS if key in backend_class(name).options]
