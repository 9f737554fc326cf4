"""Offline evaluation runner: generate, grade, and score checkpoints on the registered benchmarks.

Layout, one directory per (model, benchmark, settings):

    OUT/<model-slug>/<benchmark>/<hash12>/
        settings.json   everything that changes outputs (written first); hash12 = its sha256[:12]
        samples.jsonl   one row per (problem_id, sample_index), appended + fsync'd as each completes
        metrics.json    over the requested subset only, written atomically at the end
        .lock           flock held while a run writes here (a second concurrent run is refused)

The hash leaves out --limit/--ids, so a larger --limit (or other ids) reuses finished samples.
Re-running the same command resumes: rows already in samples.jsonl are kept, only missing
(problem, sample_index) pairs are generated; a malformed line (a write cut by a kill) is reported
in one line and dropped (the file is rewritten without it), so a run killed at any moment loses
only the samples in flight.

samples.jsonl row: problem_id, sample_index, response (thinking + close + answer, after the prompt),
thinking_tokens (generated + injected Waits), answer_tokens, total_tokens (their sum), extracted
(None = no answer found), correct, gold, finish_reason (answer phase: stop | length), hit_cap,
num_waits, thinking_cap, seed (None when greedy).

metrics.json: n, samples_per_problem, n_samples, correct, accuracy, ci95 + ci_method (Wilson for
K=1, bootstrap over problems for K>1, never narrower than Wilson over problems), avg_at_k + pass_at_k (unbiased) when K>1, thinking token
mean/median, total_tokens_mean, unextracted, truncated, hit_thinking_cap, timing for this
invocation and cumulated, thinking_cap_tokens, grader, backend, settings, versions.

Non-public benchmarks (GPQA Diamond): no question text is printed, logged or written; responses
are stored with any verbatim copy of the question or its options replaced by REDACTED.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from harness.evaluation.benchmarks import (
    Benchmark,
    BenchmarkUnavailable,
    Problem,
    fingerprint,
    get_benchmark,
    select,
)
from harness.core.errors import UserError
from harness.core.stats import wilson
from harness.core.io import atomic_write_json, atomic_write_text, dir_lock, ensure_writable_dir

# Bump when the runner's behaviour changes what a (settings -> samples) directory holds.
RUNNER_VERSION = 1
DEFAULT_BENCHMARKS = ("aime24", "math500", "gpqa_diamond")
REDACTED = "[REDACTED: benchmark question text]"
SAMPLES_FILE, METRICS_FILE, SETTINGS_FILE = "samples.jsonl", "metrics.json", "settings.json"
SAMPLE_FIELDS = ("problem_id", "sample_index", "response", "thinking_tokens", "answer_tokens",
                 "total_tokens", "extracted", "correct", "finish_reason", "hit_cap", "num_waits")


@dataclass
class EvalConfig:
    model: str
    benchmarks: Sequence[str] = DEFAULT_BENCHMARKS
    backend: str = "auto"                      # auto | hf | vllm
    limit: int | None = None                   # first N problems of each benchmark
    ids: Sequence[str] | None = None           # explicit ids; "bench:id" scopes one to a benchmark
    max_new_tokens: int = 32768                # s1's total budget per request (max_gen_toks; the
                                               # "auto" cap and the answer room count the prompt in it)
    thinking_budget: int | str | None = "auto"  # thinking cap: int, "auto" (s1) or None (no cap)
    answer_budget: int | None = None           # max answer tokens; None = what is left of the total
    wait: int = 0                              # forced "Wait"s when thinking stops on its own
    budget_mode: str = "independent"           # "independent" (exact cap) | "s1-compat" (s1's loop)
    delimiters: str = "s1"                     # preset of harness.evaluation.generation.prompts.PRESETS
    samples: int = 1                           # K samples per problem
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    gpqa_csv: str | None = None
    benchmark_options: dict = field(default_factory=dict)  # extra loader options (e.g. arith_level);
                                               # they reach the hash through the data fingerprint
    out: str = "runs/eval"
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    batch_size: int | None = None              # requests per backend call (None: backend default)
    system: str | None = None                  # system message; None = chat template's default
    grade_timeout_s: float = 10.0
    grade_workers: int | None = None
    progress: bool = True
    summary: bool = True                       # print the rich summary table


# ------------------------------------------------------------------------------------ helpers


def model_slug(model: str) -> str:
    """Directory-safe name: 'Qwen/Qwen2.5-32B' -> 'Qwen--Qwen2.5-32B'; a local dir -> its last two
    path parts and a hash of its absolute path (ckpts/run3/checkpoint-100 -> run3--checkpoint-100-1a2b3c:
    two runs' step-100 checkpoints, or two runs named alike in other folders, get folders of their own)."""
    p = Path(model).expanduser()
    suffix = ""
    if p.exists():
        p = p.resolve()
        parts = p.parts[-2:]
        suffix = "-" + hashlib.sha256(str(p).encode()).hexdigest()[:6]
    else:
        parts = tuple(model.strip("/").split("/"))[-2:]
    slug = "--".join(parts)
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", slug).strip("._") or "model"
    return slug[:89] + suffix


def settings_hash(settings: dict) -> str:
    blob = json.dumps(settings, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def sample_seed(seed: int, problem_id: str, sample_index: int) -> int:
    """Per-request seed: resumed and uninterrupted runs draw the same sample for the same pair."""
    h = hashlib.sha256(f"{seed}:{problem_id}:{sample_index}".encode()).hexdigest()
    return int(h[:8], 16)


def split_ids(ids: Sequence[str] | None, benchmarks: Sequence[str]) -> dict[str, list[str] | None]:
    """--ids entries apply to every benchmark unless written 'benchmark:id'."""
    if ids is None:
        return {b: None for b in benchmarks}
    per: dict[str, list[str]] = {b: [] for b in benchmarks}
    for raw in ids:
        raw = str(raw).strip()
        if not raw:
            continue
        head, sep, tail = raw.partition(":")
        if sep and head in per:
            per[head].append(tail)
        elif sep and head not in per and _is_benchmark(head):
            raise UserError(f"--ids entry {raw!r} names benchmark {head!r}, which is not in --benchmarks")
        else:
            for b in benchmarks:
                per[b].append(raw)
    empty = [b for b, v in per.items() if not v]
    if empty:
        raise UserError(f"--ids selects no problem of {', '.join(empty)}; write ids as BENCHMARK:ID "
                        "or drop those benchmarks from --benchmarks")
    return per


def _is_benchmark(name: str) -> bool:
    try:
        get_benchmark(name)
        return True
    except UserError:
        return False


def redact(text: str, private: Iterable[str]) -> str:
    """Replace verbatim copies of private texts, of their lines (>= 12 characters) and of their
    sentences (>= 30 characters) by REDACTED. A paraphrase cannot be caught this way."""
    pieces: set[str] = set()
    for t in private:
        t = t.strip()
        if len(t) >= 4:
            pieces.add(t)
        pieces.update(line.strip() for line in t.splitlines() if len(line.strip()) >= 12)
        pieces.update(x.strip() for x in re.split(r"(?<=[.?!;:])\s+", t) if len(x.strip()) >= 30)
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, REDACTED)
    return text


def _package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "vllm", "math-verify", "datasets", "iwsft-harness"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import harness

        out["harness"] = harness.__version__
    except Exception:  # pragma: no cover
        pass
    return out


@contextlib.contextmanager
def _dropped_if_failed_empty(run_dir: Path, out_root: Path, fresh: bool):
    """A run folder made by this call that fails before its first sample is removed (with the
    model/benchmark folders it leaves empty): a failed eval leaves nothing half-written."""
    try:
        yield
    except BaseException:
        samples = run_dir / SAMPLES_FILE
        if fresh and not (samples.is_file() and samples.stat().st_size > 0):
            shutil.rmtree(run_dir, ignore_errors=True)
            for parent in (run_dir.parent, run_dir.parent.parent):
                if parent != out_root:
                    with contextlib.suppress(OSError):
                        parent.rmdir()          # only when empty
        raise


def _dir_lock(run_dir: Path):
    return dir_lock(run_dir, f"another eval is writing to {run_dir}; wait for it or use another --out")


# ------------------------------------------------------------------------------------ samples


class SampleStore:
    """samples.jsonl: append-only, one JSON object per line, fsync'd after every row."""

    def __init__(self, path: Path, warn: Callable[[str], None]):
        self.path = Path(path)
        self.warn = warn
        self._f = None

    def load(self) -> dict[tuple[str, int], dict]:
        """Rows by (problem_id, sample_index). Malformed lines and duplicates are dropped with one
        warning line each kind, and the file is rewritten without them."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        rows: dict[tuple[str, int], dict] = {}
        kept: list[bytes] = []
        bad: list[int] = []
        dups = 0
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
                key = (str(row["problem_id"]), int(row["sample_index"]))
                if not isinstance(row.get("correct"), bool):
                    raise ValueError("no verdict")
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                bad.append(n)
                continue
            if key in rows:
                dups += 1
                continue
            rows[key] = row
            kept.append(line)
        needs_newline = bool(data) and not data.endswith(b"\n")
        if bad:
            last = max((n for n, l in enumerate(lines, 1) if l.strip()), default=0)
            where = "the last line" if bad == [last] else f"lines {', '.join(map(str, bad[:5]))}"
            self.warn(f"{self.path}: dropped {len(bad)} malformed line(s) ({where}: an interrupted write); "
                      "those samples will be generated again")
        if dups:
            self.warn(f"{self.path}: dropped {dups} duplicate row(s) (same problem_id and sample_index)")
        if bad or dups or needs_newline:
            atomic_write_text(self.path, "".join(l.decode("utf-8") + "\n" for l in kept))
        return rows

    def append(self, row: dict) -> None:
        if self._f is None:
            self._f = open(self.path, "a", encoding="utf-8")
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


# ------------------------------------------------------------------------------------ metrics

wilson_interval = wilson   # one implementation, in harness.core.stats


def bootstrap_interval(per_problem: Sequence[float], *, resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap of the mean over problems."""
    import numpy as np

    x = np.asarray(per_problem, dtype=float)
    if len(x) == 0:
        return (0.0, 1.0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    a = (1 - level) / 2
    return (float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError("k > n")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def compute_metrics(problems: Sequence[Problem], rows: dict[tuple[str, int], dict], k: int) -> dict:
    """Metrics over `problems` x range(k); every pair must have a row."""
    per_problem_correct: list[list[bool]] = []
    samples: list[dict] = []
    for p in problems:
        rs = [rows[(p.id, s)] for s in range(k)]
        samples.extend(rs)
        per_problem_correct.append([bool(r["correct"]) for r in rs])
    n = len(problems)
    n_samples = len(samples)
    n_correct = sum(sum(c) for c in per_problem_correct)
    per_problem_mean = [sum(c) / k for c in per_problem_correct]
    accuracy = (sum(per_problem_mean) / n) if n else None
    if k == 1:
        lo, hi = wilson_interval(n_correct, n)
        ci_method = "wilson"
    else:
        # The percentile bootstrap collapses to [0, 0] when every sample is wrong (and is narrow on a
        # few problems): never report narrower than Wilson's interval with each problem as one trial.
        blo, bhi = bootstrap_interval(per_problem_mean)
        wlo, whi = wilson_interval(sum(per_problem_mean), n)
        lo, hi = min(blo, wlo), max(bhi, whi)
        ci_method = "bootstrap over problems (2000 resamples, percentile), at least Wilson over problems"
    thinking = [int(r.get("thinking_tokens") or 0) for r in samples]
    total = [int(r.get("total_tokens") or 0) for r in samples]
    m: dict[str, Any] = {
        "n": n,
        "samples_per_problem": k,
        "n_samples": n_samples,
        "correct": n_correct,
        "accuracy": accuracy,
        "ci95": [lo, hi] if n else None,
        "ci_method": ci_method,
        "thinking_tokens_mean": statistics.fmean(thinking) if thinking else None,
        "thinking_tokens_median": statistics.median(thinking) if thinking else None,
        "total_tokens_mean": statistics.fmean(total) if total else None,
        "unextracted": sum(1 for r in samples if r.get("extracted") is None),
        "truncated": sum(1 for r in samples if r.get("finish_reason") == "length"),
        "hit_thinking_cap": sum(1 for r in samples if r.get("hit_cap")),
    }
    if k > 1:
        m["avg_at_k"] = accuracy
        ks = sorted({j for j in (1, 2, 4, 8, 16, 32, 64, 128) if j <= k} | {k})
        m["pass_at_k"] = {
            str(j): (sum(pass_at_k(k, sum(c), j) for c in per_problem_correct) / n if n else None)
            for j in ks
        }
    return m


# ------------------------------------------------------------------------------------ generation


class _Engine:
    """Lazily loads the tokenizer and the backend once, shared by every benchmark of a run."""

    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        self._resolved = None
        self._tokenizer = None
        self._backend = None

    # -- identity without loading weights
    @property
    def resolved(self):
        if self._resolved is None:
            from harness.core.models import resolve_model

            self._resolved = resolve_model(self.cfg.model)
        return self._resolved

    def model_identity(self) -> str:
        """What the settings hash sees: alias name + GGUF file, a local folder's absolute path, or
        the hub id (not the alias's cache folder, which moves with $IWSFT_CACHE)."""
        r = self.resolved
        if r.kind == "alias":
            return f"alias:{r.info.get('alias', r.name)}:{r.info.get('gguf', '')}"
        return f"{r.kind}:{r.path}"

    def backend_kind(self) -> str:
        from harness.evaluation.generation import resolve_backend_kind

        return resolve_backend_kind(self.cfg.backend)

    @property
    def delimiters(self):
        from harness.evaluation.generation.prompts import get_delimiters

        return get_delimiters(self.cfg.delimiters)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from harness.core.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.resolved)
        return self._tokenizer

    @property
    def backend(self):
        if self._backend is None:
            from harness.evaluation.generation import make_backend

            opts = {} if self.cfg.batch_size is None else {"batch_size": self.cfg.batch_size}
            self._backend = make_backend(
                self.backend_kind(), self.cfg.model, tokenizer=self.tokenizer,
                dtype=None if self.cfg.dtype == "auto" else self.cfg.dtype,
                tensor_parallel_size=self.cfg.tensor_parallel_size, **opts,
            )
        return self._backend

    def backend_info(self) -> dict:
        b = self._backend
        if b is None:
            return {"kind": self.backend_kind(), "name": None, "version": None}
        return {"kind": self.backend_kind(), "name": getattr(b, "name", None), "version": b.version()}

    def prompt_ids(self, problem: Problem) -> list[int]:
        from harness.evaluation.generation.prompts import build_prompt_ids

        return list(build_prompt_ids(self.tokenizer, problem.question, self.delimiters, system=self.cfg.system))

    def budget(self, longest_prompt: int):
        from harness.evaluation.generation.budget import BudgetConfig
        from harness.evaluation.generation.prompts import delimiter_ids

        budget = BudgetConfig(thinking_budget=self.cfg.thinking_budget, num_wait=self.cfg.wait,
                              max_answer_tokens=self.cfg.answer_budget, total_budget=self.cfg.max_new_tokens,
                              mode=self.cfg.budget_mode, longest_prompt=longest_prompt)
        budget.resolve_caps([longest_prompt], delimiter_ids(self.tokenizer, self.delimiters))   # fails before the model loads
        return budget

    def generate(self, prompts: list[list[int]], budget, seeds: list[int],
                 on_result: Callable[[int, Any], None]) -> None:
        from harness.evaluation.generation.budget import generate_with_budget

        generate_with_budget(self.backend, self.tokenizer, prompts, budget, self.delimiters,
                             temperature=self.cfg.temperature, top_p=self.cfg.top_p, seed=seeds,
                             on_result=on_result)


# ------------------------------------------------------------------------------------ runner


def _settings(cfg: EvalConfig, engine: _Engine, spec: Benchmark, all_problems: Sequence[Problem]) -> dict:
    """Everything that changes outputs; NOT limit/ids (subsets share one directory)."""
    kind = engine.backend_kind()
    return {
        "runner_version": RUNNER_VERSION,
        "model": engine.model_identity(),
        "benchmark": spec.name,
        "data_sha256": fingerprint(all_problems),
        "n_problems_total": len(all_problems),
        "prompt": {"system": cfg.system, "delimiters": _jsonable(engine.delimiters)},
        "max_new_tokens": cfg.max_new_tokens,
        "thinking_budget": cfg.thinking_budget,
        "answer_budget": cfg.answer_budget,
        "wait": cfg.wait,
        "budget_mode": cfg.budget_mode,
        "samples": cfg.samples,
        "temperature": cfg.temperature,
        # greedy decoding ignores these: leaving them out lets a greedy run be resumed under any --seed
        "top_p": cfg.top_p if cfg.temperature > 0 else None,
        "seed": cfg.seed if cfg.temperature > 0 else None,
        "backend": kind,
        "dtype": cfg.dtype,
        "tensor_parallel_size": cfg.tensor_parallel_size if kind == "vllm" else None,
    }


def _jsonable(obj):
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, dict):
        return obj
    return repr(obj)


def validate(cfg: EvalConfig) -> None:
    if not cfg.benchmarks:
        raise UserError("no benchmark given; use --benchmarks aime24,math500,gpqa_diamond")
    for b in cfg.benchmarks:
        get_benchmark(b)
    if len(set(cfg.benchmarks)) != len(cfg.benchmarks):
        raise UserError(f"--benchmarks lists a benchmark twice: {','.join(cfg.benchmarks)}")
    if cfg.backend not in ("auto", "hf", "vllm"):
        raise UserError(f"--backend must be auto, hf or vllm, not {cfg.backend!r}")
    if cfg.budget_mode not in ("independent", "s1-compat"):
        raise UserError(f"--budget-mode must be independent or s1-compat, not {cfg.budget_mode!r}")
    from harness.evaluation.generation.prompts import get_delimiters

    get_delimiters(cfg.delimiters)
    if cfg.samples < 1:
        raise UserError("--samples must be >= 1")
    if cfg.samples > 1 and cfg.temperature == 0:
        raise UserError("--samples > 1 needs --temperature > 0 (greedy samples would be identical)")
    if cfg.temperature < 0:
        raise UserError("--temperature must be >= 0")
    if cfg.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be >= 1")
    tb = cfg.thinking_budget
    if not (tb is None or tb == "auto" or (isinstance(tb, int) and not isinstance(tb, bool) and tb >= 1)):
        raise UserError(f"--thinking-budget must be a token count, 'auto' or 'none', not {tb!r}")
    if cfg.answer_budget is not None and cfg.answer_budget < 1:
        raise UserError("--answer-budget must be >= 1")
    if cfg.answer_budget is not None and cfg.answer_budget > cfg.max_new_tokens:
        raise UserError(f"--answer-budget {cfg.answer_budget} exceeds --max-new-tokens {cfg.max_new_tokens}, the "
                        "total per request (prompt included); lower --answer-budget or raise --max-new-tokens")
    if not 0 < cfg.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {cfg.top_p:g} (1 = no nucleus truncation)")
    if cfg.wait < 0:
        raise UserError("--wait must be >= 0")
    if cfg.limit is not None and cfg.limit < 0:
        raise UserError("--limit must be >= 0")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    from harness.evaluation.generation import resolve_backend_kind
    from harness.core.models import _torch_dtype

    _torch_dtype(cfg.dtype)                     # before any run folder is made
    if resolve_backend_kind(cfg.backend) == "vllm":
        from harness.evaluation.generation.vllm_backend import import_vllm

        import_vllm()


class _Progress:
    """rich progress bar on stderr: problems done, tokens/s, running accuracy."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._p = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("problems"), TextColumn("{task.fields[tps]} tok/s"),
                TextColumn("acc {task.fields[acc]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._p.__enter__()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

    def add(self, name: str, total: int, done: int):
        if self._p is None:
            return None
        return self._p.add_task(name, total=total, completed=done, tps="-", acc="-")

    def update(self, task, done: int, tps: float | None, acc: float | None):
        if self._p is None or task is None:
            return
        self._p.update(task, completed=done, tps="-" if tps is None else f"{tps:.1f}",
                       acc="-" if acc is None else f"{100 * acc:.1f}%")


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_eval(cfg: EvalConfig) -> dict[str, dict]:
    """Evaluate `cfg.model` on each benchmark; returns {benchmark: metrics} (a skipped benchmark maps
    to {"skipped": reason}). Resumes from, and appends to, OUT/<model-slug>/<benchmark>/<hash12>/."""
    validate(cfg)
    ids_per = split_ids(cfg.ids, cfg.benchmarks)
    out_root = ensure_writable_dir(Path(cfg.out))
    engine = _Engine(cfg)
    results: dict[str, dict] = {}
    # Load and select everything first: a bad id in the last benchmark fails before any generation.
    plan = []
    for name in cfg.benchmarks:
        spec = get_benchmark(name)
        try:
            all_problems = spec.load({**cfg.benchmark_options, "gpqa_csv": cfg.gpqa_csv})
        except BenchmarkUnavailable as e:
            _warn(f"skipping {name}: {e}")
            results[name] = {"skipped": str(e)}
            continue
        subset = select(all_problems, limit=cfg.limit, ids=ids_per[name], benchmark=name)
        plan.append((spec, all_problems, subset))
    with _Progress(cfg.progress) as progress:
        for spec, all_problems, subset in plan:
            results[spec.name] = _run_benchmark(cfg, engine, spec, all_problems, subset, out_root, progress)
    results = {name: results[name] for name in cfg.benchmarks}  # the order asked for
    if cfg.summary:
        print_summary(results)
    return results


def _run_benchmark(cfg: EvalConfig, engine: _Engine, spec: Benchmark, all_problems: list[Problem],
                   subset: list[Problem], out_root: Path, progress: _Progress) -> dict:
    t_start = time.time()
    settings = _settings(cfg, engine, spec, all_problems)
    digest = settings_hash(settings)
    run_dir = out_root / model_slug(cfg.model) / spec.name / digest[:12]
    fresh = not run_dir.exists()
    run_dir = ensure_writable_dir(run_dir)
    k = cfg.samples
    with _dropped_if_failed_empty(run_dir, out_root, fresh), _dir_lock(run_dir):
        settings_path = run_dir / SETTINGS_FILE
        if not settings_path.exists():
            atomic_write_json(settings_path, {**settings, "settings_sha256": digest, "model_arg": cfg.model})
        store = SampleStore(run_dir / SAMPLES_FILE, _warn)
        rows = store.load()
        missing = [(p, s) for p in subset for s in range(k) if (p.id, s) not in rows]
        reused = len(subset) * k - len(missing)

        gen_tokens = 0
        gen_time = 0.0
        try:
            if missing:
                gen_tokens, gen_time = _generate_missing(cfg, engine, spec, all_problems, subset,
                                                         missing, rows, store, progress)
        finally:
            store.close()
        metrics = compute_metrics(subset, rows, k)
        previous = _read_json(run_dir / METRICS_FILE) or {}
        cum_tokens = int(previous.get("cumulative_generated_tokens") or 0) + gen_tokens
        cum_time = float(previous.get("cumulative_generation_time_s") or 0.0) + gen_time
        backend = engine.backend_info() if missing else previous.get("backend") or engine.backend_info()
        metrics.update({
            "benchmark": spec.name,
            "model": cfg.model,
            "run_dir": str(run_dir),
            "settings_sha256": digest,
            "subset": {"limit": cfg.limit, "ids": None if cfg.ids is None else [p.id for p in subset]},
            "problem_ids": [p.id for p in subset],  # what the metrics cover (the file may hold more)
            "generated_now": len(missing),
            "reused": reused,
            "wall_time_s": time.time() - t_start,
            "generation_time_s": gen_time,
            "generated_tokens": gen_tokens,
            "tokens_per_s": (gen_tokens / gen_time) if gen_time > 0 else None,
            # over every invocation that wrote to this directory (killed ones excepted)
            "cumulative_generated_tokens": cum_tokens,
            "cumulative_generation_time_s": cum_time,
            "cumulative_tokens_per_s": (cum_tokens / cum_time) if cum_time > 0 else None,
            "thinking_cap_tokens": _caps(subset, rows, k),
            "grader": {"benchmark": spec.grader, "note": "deterministic offline grader (harness.evaluation.grading), "
                       "not s1's gpt-4o-mini judge; GPQA never defaults to a letter"},
            "backend": backend,
            "settings": settings,
            "versions": _package_versions(),
        })
        atomic_write_json(run_dir / METRICS_FILE, metrics)
    return metrics


def _caps(subset, rows, k):
    caps = sorted({rows[(p.id, s)].get("thinking_cap") for p in subset for s in range(k)} - {None})
    return caps[0] if len(caps) == 1 else (caps or None)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _generate_missing(cfg, engine: _Engine, spec: Benchmark, all_problems, subset, missing, rows,
                      store: SampleStore, progress: _Progress):
    """Generate the missing (problem, sample) pairs in chunks, grading and writing (fsync) each
    sample as it completes; a kill loses at most the chunk in flight."""
    from harness.evaluation.grading import grade_many

    prompt_of = {p.id: engine.prompt_ids(p) for p in subset}
    # "auto" thinking cap uses the longest prompt of the WHOLE benchmark, so a subset run makes the
    # same requests as a full run (the settings hash leaves --limit/--ids out).
    if cfg.thinking_budget == "auto":
        longest = max(len(prompt_of[p.id]) if p.id in prompt_of else len(engine.prompt_ids(p))
                      for p in all_problems)
    else:
        longest = max(len(v) for v in prompt_of.values())
    budget = engine.budget(longest)
    prompts = [prompt_of[p.id] for p, _ in missing]
    seeds = [sample_seed(cfg.seed, p.id, s) for p, s in missing]
    # Budget forcing returns a request when its answer is done, but a backend call holds a whole
    # round, so requests go in chunks: one backend batch on hf, everything at once on vLLM
    # (continuous batching) unless --batch-size says otherwise.
    chunk = cfg.batch_size or (16 if engine.backend_kind() == "hf" else len(missing))

    k = cfg.samples
    subset_ids = set(p.id for p in subset)
    n_done_problems = lambda: sum(1 for pid in subset_ids if all((pid, s) in rows for s in range(k)))  # noqa: E731
    task = progress.add(spec.name, total=len(subset), done=n_done_problems())
    t0 = time.time()
    tokens = 0
    answer_delim = engine.delimiters.answer_prefix.strip()

    def on_result(i: int, res) -> None:
        nonlocal tokens
        problem, s = missing[i]
        response = res.text
        verdict = grade_many(spec.grader, [(response, problem.gold)], timeout_s=cfg.grade_timeout_s,
                             workers=cfg.grade_workers, answer_delimiter=answer_delim)[0]
        row = {
            "problem_id": problem.id,
            "sample_index": s,
            "response": response if spec.public else redact(response, problem.private),
            "thinking_tokens": int(res.thinking_tokens),
            "answer_tokens": int(res.answer_tokens),
            "total_tokens": int(res.thinking_tokens) + int(res.answer_tokens),
            "extracted": verdict.extracted,
            "correct": bool(verdict.correct),
            "gold": problem.gold,
            "finish_reason": res.finish_reason,
            "hit_cap": bool(res.hit_cap),
            "num_waits": int(res.num_waits_used),
            "thinking_cap": int(res.thinking_cap),
            "seed": seeds[i] if cfg.temperature > 0 else None,
        }
        store.append(row)
        rows[(problem.id, s)] = row
        tokens += row["total_tokens"]
        done = [r for key, r in rows.items() if key[0] in subset_ids and key[1] < k]
        acc = (sum(r["correct"] for r in done) / len(done)) if done else None
        elapsed = time.time() - t0
        progress.update(task, n_done_problems(), tokens / elapsed if elapsed > 0 else None, acc)

    for start in range(0, len(missing), chunk):
        part = list(range(start, min(start + chunk, len(missing))))
        engine.generate([prompts[i] for i in part], budget, [seeds[i] for i in part],
                        lambda j, res, part=part: on_result(part[j], res))
    lost = [(p.id, s) for p, s in missing if (p.id, s) not in rows]
    if lost:
        raise RuntimeError(f"{spec.name}: the backend returned no result for {len(lost)} request(s)")
    return tokens, time.time() - t0


# ------------------------------------------------------------------------------------ summary


def summary_rows(results: dict[str, dict]) -> list[list[str]]:
    out = []
    for name, m in results.items():
        if "skipped" in m:
            out.append([name, "-", "skipped", "-", "-", "-"])
            continue
        acc = m.get("accuracy")
        ci = m.get("ci95")
        acc_s = "-" if acc is None else f"{100 * acc:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
        think = m.get("thinking_tokens_mean")
        out.append([name, str(m["n"]) + (f" x{m['samples_per_problem']}" if m["samples_per_problem"] > 1 else ""),
                    acc_s, "-" if think is None else f"{think:.0f}",
                    str(m["unextracted"]), str(m["truncated"])])
    return out


def print_summary(results: dict[str, dict], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 110))
    table = Table(title="iwsft eval")
    for col, just in (("benchmark", "left"), ("n", "right"), ("accuracy % [95% CI]", "right"),
                      ("mean thinking tokens", "right"), ("unextracted", "right"), ("truncated", "right")):
        table.add_column(col, justify=just, no_wrap=True)
    for r in summary_rows(results):
        table.add_row(*r)
    console.print(table)
    for name, m in results.items():
        if "skipped" in m:
            console.print(f"{name} skipped: {m['skipped']}", markup=False, highlight=False, soft_wrap=True)
        else:
            console.print(f"{name}: {m['run_dir']}", markup=False, highlight=False, soft_wrap=True)
