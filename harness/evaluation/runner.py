"""The evaluation runner: generate, grade and score a model on benchmarks, resuming what exists.

`run_eval(cfg, engine=None)` evaluates `cfg.model` on each of `cfg.benchmarks`. Each (model,
benchmark, settings) has a run folder (harness.evaluation.store); re-running the same command
resumes: rows already stored are kept and only missing (problem, sample_index) pairs are generated.
Pass an `Engine` to evaluate several configs of one model with one loaded model.

samples.jsonl row: problem_id, sample_index, response (thinking + close + answer, after the prompt),
thinking_tokens (generated + injected Waits), answer_tokens, total_tokens (their sum), extracted
(None = no answer found), correct, grader_version (harness.evaluation.grading.GRADER_VERSION; a row of
another version is re-graded offline on the next run), gold, finish_reason (answer phase: stop | length), hit_cap,
num_waits, thinking_cap, seed (None when greedy).

metrics.json (harness.evaluation.metrics), over every problem the folder holds: n, samples_per_problem,
n_samples, correct, accuracy, ci95 + ci_method, avg_at_k + pass_at_k when K>1, `aggregates` when the
config asks for some (avg@k, maj@k, pass@k: harness.evaluation.aggregates), no_room (+ ids),
missing (+ ids: asked for by the latest command, not stored yet), thinking token mean/median,
total_tokens_mean, unextracted, truncated, hit_thinking_cap, cumulative timing, thinking_cap_tokens,
weights_id, grader, backend, settings, versions. `run_eval` returns the same over the command's own
selection (all shards of it), with this invocation's timing.

`--shard K/N` (cfg.shard): N workers share one run folder, each generating every N-th problem of the
selection from the K-th on into its own samples file; each reads the union.

Non-public benchmarks (GPQA Diamond): no question text is printed, logged or written.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from harness.core.errors import UserError
from harness.core.io import atomic_write_json, disk_full_as_user_error, ensure_writable_dir, write_jsonl_atomic
from harness.core.versions import package_versions
from harness.evaluation.benchmarks import Benchmark, BenchmarkUnavailable, Problem, fingerprint, get_benchmark, select
from harness.evaluation.aggregates import compute_aggregates, parse_aggregates
from harness.evaluation.config import EvalConfig, validate
from harness.evaluation.engine import Engine
from harness.evaluation.metrics import compute_metrics
from harness.evaluation.store import (METRICS_FILE, SETTINGS_FILE, SampleStore, dropped_if_failed_empty, metrics_lock,
                                      model_slug, parse_rows, read_json, read_samples, redact, run_lock, samples_file,
                                      samples_files, settings_hash)
from harness.evaluation.generation import backend_class
from harness.evaluation.generation.formats import format_of, needs_template_check
from harness.evaluation.generation.sampling import settings_entries as sampling_settings
from harness.evaluation.summary import Progress, print_summary

# Bump when the runner's behaviour changes what a (settings -> samples) directory holds.
RUNNER_VERSION = 1


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


def _settings(cfg: EvalConfig, engine: Engine, spec: Benchmark, all_problems: Sequence[Problem]) -> dict:
    """Everything that changes outputs; NOT limit/ids (subsets share one directory)."""
    kind = engine.backend_kind()
    return {
        "runner_version": RUNNER_VERSION,
        "model": engine.model_identity(),
        "benchmark": spec.name,
        "data_sha256": fingerprint(all_problems),
        # a file benchmark: the file's bytes (grader kind, options, ...), so an edited file gets a new folder
        **({"file_sha256": spec.content_sha256} if spec.content_sha256 else {}),
        "n_problems_total": len(all_problems),
        # chat_template_kwargs only when given, so runs made before the key existed keep their hash
        "prompt": {"system": cfg.system, "delimiters": _jsonable(format_of(cfg)),
                   **({"chat_template_kwargs": cfg.chat_template_kwargs} if cfg.chat_template_kwargs else {})},
        "max_new_tokens": cfg.max_new_tokens,
        "thinking_budget": cfg.thinking_budget,
        # only when set, so runs made before the key existed keep their hash
        **({"longest_prompt": cfg.longest_prompt} if cfg.longest_prompt is not None else {}),
        "answer_budget": cfg.answer_budget,
        "wait": cfg.wait,
        "budget_mode": cfg.budget_mode,
        "samples": cfg.samples,
        "temperature": cfg.temperature,
        # greedy decoding ignores these: leaving them out lets a greedy run be resumed under any --seed
        "top_p": cfg.top_p if cfg.temperature > 0 else None,
        "seed": cfg.seed if cfg.temperature > 0 else None,
        # top_k, min_p, presence/repetition penalty: only when not neutral (older folders keep their hash)
        **sampling_settings(cfg),
        "backend": kind,
        "tensor_parallel_size": cfg.tensor_parallel_size if backend_class(kind).tensor_parallel else None,
        **engine.settings(),     # resolved dtype, generation libraries + versions, engine options
    }


def _jsonable(obj):
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, dict):
        return obj
    return repr(obj)


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_eval(cfg: EvalConfig, engine: Engine | None = None) -> dict[str, dict]:
    """Evaluate `cfg.model` on each benchmark; returns {benchmark: metrics} (a skipped benchmark maps
    to {"skipped": reason}). Resumes from, and appends to, OUT/<model-slug>/<benchmark>/<hash12>/."""
    validate(cfg)
    if engine is None:     # ours, so ours to stop: a vLLM engine left running keeps polling a CPU core
        with Engine.for_config(cfg) as engine:
            return run_eval(cfg, engine)
    ids_per = split_ids(cfg.ids, cfg.benchmarks)
    engine.check_serves(cfg)
    if needs_template_check(cfg.delimiters, cfg.chat_template_kwargs):
        engine.check_format(cfg)          # the tokenizer's template, before any folder is made
    out_root = ensure_writable_dir(Path(cfg.out))
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
    if cfg.shard is not None and plan and not any(shard_of(subset, cfg.shard) for _, _, subset in plan):
        raise UserError(f"--shard {cfg.shard[0]}/{cfg.shard[1]} selects no problem (each benchmark has fewer problems "
                        f"than shards); use fewer shards")
    with Progress(cfg.progress, tokens=engine.tokens_generated) as progress, disk_full_as_user_error(out_root):
        for spec, all_problems, subset in plan:
            results[spec.name] = _run_benchmark(cfg, engine, spec, all_problems, subset, out_root, progress)
    results = {name: results[name] for name in cfg.benchmarks}  # the order asked for
    if cfg.summary:
        print_summary(results)
    return results


def shard_of(problems: Sequence[Problem], shard: tuple[int, int] | None) -> list[Problem]:
    """Shard K of N: every N-th problem starting at the K-th (1-based), a deterministic split of the
    selection that every worker of one run computes alike."""
    if shard is None:
        return list(problems)
    k, n = shard
    return list(problems)[k - 1::n]


def _run_benchmark(cfg: EvalConfig, engine: Engine, spec: Benchmark, all_problems: list[Problem],
                   subset: list[Problem], out_root: Path, progress: Progress) -> dict:
    """Generate what this command (or its shard) lacks; write the folder's metrics.json over
    everything the folder holds; return the metrics of the command's selection (all shards)."""
    t_start = time.time()
    settings = _settings(cfg, engine, spec, all_problems)
    digest = settings_hash(settings)
    # an adapter's runs sit in a model folder of their own: OUT/<base>+<adapter>/
    slug = model_slug(cfg.model) + (f"+{model_slug(cfg.adapter)}" if cfg.adapter else "")
    run_dir = out_root / slug / spec.name / digest[:12]
    fresh = not run_dir.exists()
    run_dir = ensure_writable_dir(run_dir)
    k = cfg.samples
    mine = shard_of(subset, cfg.shard)
    with dropped_if_failed_empty(run_dir, out_root, fresh), run_lock(run_dir, cfg.shard):
        _clean_stale_temps(run_dir, cfg.shard)
        settings_path = run_dir / SETTINGS_FILE
        if not settings_path.exists():
            atomic_write_json(settings_path, {**settings, "settings_sha256": digest, "model_arg": cfg.model,
                                              **({"adapter_arg": cfg.adapter} if cfg.adapter else {})})
        store = SampleStore(samples_file(run_dir, cfg.shard), _warn)
        store.load()                      # repairs this writer's own file
        _regrade_stale(cfg, spec, run_dir, cfg.shard)
        rows = read_samples(run_dir)      # the union: other shards' rows count as done
        missing = [(p, s) for p in mine for s in range(k) if (p.id, s) not in rows]
        reused = len(mine) * k - len(missing)

        gen_tokens = 0
        gen_time = 0.0
        try:
            if missing:
                gen_tokens, gen_time = _generate_missing(cfg, engine, spec, all_problems, mine,
                                                         missing, rows, store, progress)
        finally:
            store.close()
        generated = sum(1 for p, s in missing if (p.id, s) in rows and not rows[(p.id, s)].get("no_room"))
        command = {"limit": cfg.limit, "ids": None if cfg.ids is None else [p.id for p in subset],
                   "shard": None if cfg.shard is None else f"{cfg.shard[0]}/{cfg.shard[1]}",
                   "generated_now": generated, "reused": reused, "wall_time_s": time.time() - t_start,
                   "generation_time_s": gen_time, "generated_tokens": gen_tokens,
                   "tokens_per_s": (gen_tokens / gen_time) if gen_time > 0 else None}
        with metrics_lock(run_dir):
            rows = read_samples(run_dir)
            previous = read_json(run_dir / METRICS_FILE) or {}
            cum_tokens = int(previous.get("cumulative_generated_tokens") or 0) + gen_tokens
            cum_time = float(previous.get("cumulative_generation_time_s") or 0.0) + gen_time
            backend = _backend(engine, settings, previous if isinstance(previous, dict) else {}, bool(missing))
            held = {pid for pid, _ in rows} | {p.id for p in subset}
            common = {
                "benchmark": spec.name,
                "model": cfg.model,
                **({"adapter": cfg.adapter} if cfg.adapter else {}),
                "weights_id": engine.weights_id(),
                "run_dir": str(run_dir),
                "settings_sha256": digest,
                "thinking_cap_tokens": _caps(rows),
                "grader": {"benchmark": spec.name, "kind": spec.grader, "note": "deterministic offline grader (harness.evaluation.grading), "
                           "not s1's gpt-4o-mini judge; GPQA never defaults to a letter"},
                "backend": backend,
                "settings": settings,
                "versions": package_versions(),
            }
            folder = compute_metrics([p for p in all_problems if p.id in held], rows, k)
            _add_aggregates(folder, cfg, spec, all_problems, rows)
            # `missing_ids` of the folder: what the latest command asked for and is not there yet
            # (other shards still running, or an interrupted run), not every problem of the benchmark.
            folder.update(common)
            folder.update({
                "covers": "every problem stored in this run folder (all samples files)",
                "last_command": command,
                # over every invocation that wrote to this directory (killed ones excepted)
                "cumulative_generated_tokens": cum_tokens,
                "cumulative_generation_time_s": cum_time,
                "cumulative_tokens_per_s": (cum_tokens / cum_time) if cum_time > 0 else None,
            })
            atomic_write_json(run_dir / METRICS_FILE, folder)
    metrics = compute_metrics(subset, rows, k)
    _add_aggregates(metrics, cfg, spec, all_problems, rows)
    metrics.update(common)
    metrics.update({
        "covers": "the problems this command selected" + (" (all shards)" if cfg.shard else ""),
        "subset": {"limit": cfg.limit, "ids": command["ids"]},
        "selected_ids": [p.id for p in subset],
        "shard": command["shard"],
        **{k: v for k, v in command.items() if k not in ("limit", "ids", "shard")},
    })
    return metrics


def _backend(engine: Engine, settings: dict, previous: dict, generated: bool) -> dict:
    """The backend that generated the folder's samples: the engine's when it generated now, else the
    previous metrics' (when whole), else the run's settings (kind and library versions key the folder,
    so they are the backend's): a re-run over complete samples writes what an uninterrupted run did."""
    info = engine.backend_info() if generated else None
    if info and info.get("name") is not None:
        return info
    prev = previous.get("backend")
    if isinstance(prev, dict) and prev.get("name") is not None:
        return prev
    kind, libs = settings.get("backend"), settings.get("generation_libraries")
    if kind and isinstance(libs, dict):
        cls = backend_class(kind)
        return {"kind": kind, "name": cls.name, "version": cls.version_from_libraries(libs)}
    return info or engine.backend_info()


def _clean_stale_temps(run_dir: Path, shard) -> None:
    """Temp files of atomic writes cut by a kill (.settings.json.*.tmp, ...): never read, removed.
    A shard removes only its own samples file's: the others' may be in flight."""
    pattern = ".*.tmp" if shard is None else f".samples.shard-{shard[0]}-of-{shard[1]}.jsonl.*.tmp"
    for p in run_dir.glob(pattern):
        p.unlink(missing_ok=True)


def _regrade_stale(cfg: EvalConfig, spec: Benchmark, run_dir: Path, shard) -> None:
    """Verdicts stored by another grader version (or before versions were stored) are graded again
    from their stored response and gold, offline, and the samples files rewritten; one line says how
    many changed. An unsharded run holds the folder alone and does every file; a shard its own."""
    from harness.evaluation.grading import GRADER_VERSION, grade_many

    files = samples_files(run_dir) if shard is None else [p for p in [samples_file(run_dir, shard)] if p.is_file()]
    delim = format_of(cfg).answer_prefix.strip()
    for path in files:
        rows = list(parse_rows(path.read_bytes())[0].values())
        stale = [r for r in rows if r.get("grader_version") != GRADER_VERSION and not r.get("no_room")
                 and isinstance(r.get("response"), str) and r.get("gold") is not None]
        if not stale:
            continue
        verdicts = grade_many(spec.grader, [(r["response"], str(r["gold"])) for r in stale], timeout_s=cfg.grade_timeout_s,
                              workers=cfg.grade_workers, answer_delimiter=delim)
        changed = 0
        for r, v in zip(stale, verdicts):
            changed += r["correct"] != bool(v.correct)
            was = r.get("grader_version")
            r.update(extracted=v.extracted, correct=bool(v.correct), grader_version=GRADER_VERSION)
            r.setdefault("graded_before_by", was)
        write_jsonl_atomic(path, rows)
        _warn(f"{spec.name}: re-graded {len(stale)} stored verdict(s) of {path.name} with grader version {GRADER_VERSION} "
              f"(stored by another or an unrecorded version): {changed} changed")


def _add_aggregates(metrics: dict, cfg: EvalConfig, spec: Benchmark, problems: Sequence[Problem], rows) -> None:
    """The aggregates the config asks for (avg@k, maj@k, pass@k) over the problems `metrics` scored."""
    aggs = parse_aggregates(cfg.aggregates, cfg.samples)
    if not aggs:
        return
    clusters = {p.id: p.meta["cluster"] for p in problems if "cluster" in p.meta} or None
    metrics["aggregates"] = compute_aggregates(aggs, metrics["problem_ids"], rows, cfg.samples, spec.grader, clusters,
                                               timeout_s=cfg.grade_timeout_s, workers=cfg.grade_workers)


def _caps(rows):
    caps = sorted({r.get("thinking_cap") for r in rows.values()} - {None})
    return caps[0] if len(caps) == 1 else (caps or None)



def _mark_no_room(cfg, engine: Engine, spec: Benchmark, missing, prompt_of, rows, store: SampleStore):
    """Problems whose prompt leaves no room for one answer token under the total budget (after the
    forced close) are not generated: their rows say no_room, and metrics count them apart instead
    of scoring an empty forced answer. Returns the pairs still to generate."""
    close = engine.close_tokens(cfg)
    roomless = {pid for pid, ids in prompt_of.items() if cfg.max_new_tokens - len(ids) - close < 1}
    if not roomless:
        return missing
    longest = max(len(prompt_of[pid]) for pid in roomless)
    _warn(f"{spec.name}: {len(roomless)} problem(s) not scored: their prompt (up to {longest} tokens) + the "
          f"{close}-token close leave no room under the total budget of {cfg.max_new_tokens} tokens "
          "(--total-budget counts the prompt); raise --total-budget to score them")
    for p, s in missing:
        if p.id in roomless:
            row = {"problem_id": p.id, "sample_index": s, "no_room": True, "correct": None, "response": None,
                   "prompt_tokens": len(prompt_of[p.id]), "total_budget": cfg.max_new_tokens}
            store.append(row)
            rows[(p.id, s)] = row
    return [(p, s) for p, s in missing if p.id not in roomless]


def _redacted_spans(response: str, private, res) -> list:
    """Forced spans of a response that redaction leaves unchanged; none when it changed the text
    (the viewer then finds the Waits by their text)."""
    return list(getattr(res, "forced", None) or []) if redact(response, private) == response else []


VLLM_CHUNK = 1024     # requests per vLLM call when --batch-size is not given


def _generate_missing(cfg, engine: Engine, spec: Benchmark, all_problems, subset, missing, rows,
                      store: SampleStore, progress: Progress):
    """Generate the missing (problem, sample) pairs in chunks, grading and writing (fsync) each
    sample as it completes; a kill loses at most the chunk in flight."""
    from harness.evaluation.grading import GRADER_VERSION, grade_many

    prompt_of = {p.id: engine.prompt_ids(p, cfg) for p in subset}
    # "auto" thinking cap uses the longest prompt of the WHOLE benchmark, so a subset run makes the
    # same requests as a full run (the settings hash leaves --limit/--ids out).
    if cfg.thinking_budget == "auto" and cfg.longest_prompt is not None:
        longest = cfg.longest_prompt            # given by the caller (e.g. over every benchmark of a suite)
    elif cfg.thinking_budget == "auto":
        longest = max(len(prompt_of[p.id]) if p.id in prompt_of else len(engine.prompt_ids(p, cfg))
                      for p in all_problems)
    else:
        longest = max(len(v) for v in prompt_of.values())
    budget = engine.budget(cfg, longest)      # a bad budget fails here, before anything is written
    missing = _mark_no_room(cfg, engine, spec, missing, prompt_of, rows, store)
    if not missing:
        return 0, 0.0
    prompts = [prompt_of[p.id] for p, _ in missing]
    seeds = [sample_seed(cfg.seed, p.id, s) for p, s in missing]
    # Budget forcing returns a request when its answer is done, but a backend call holds a whole
    # round, so requests go in chunks (--batch-size): one backend batch on hf; on vLLM (continuous
    # batching) VLLM_CHUNK at a time, enough to keep its scheduler full (256 sequences by default)
    # while a kill loses at most one chunk and samples are stored as each chunk ends.
    chunk = cfg.batch_size or (VLLM_CHUNK if backend_class(engine.backend_kind()).continuous_batching else 16)

    k = cfg.samples
    subset_ids = set(p.id for p in subset)
    n_done = lambda: sum(1 for pid in subset_ids for s in range(k) if (pid, s) in rows)  # noqa: E731  (samples)
    # which model and, off the default, which (thinking cap, Wait) cell: a budget sweep runs many
    cell = f", cap {cfg.thinking_budget}, wait {cfg.wait}" if cfg.wait or cfg.thinking_budget != "auto" else ""
    task = progress.add(f"{spec.name} ({model_slug(cfg.model)}{cell})", total=len(subset) * k, done=n_done())
    t0 = time.time()
    tokens = 0
    answer_delim = format_of(cfg).answer_prefix.strip()

    def on_result(i: int, res) -> None:
        nonlocal tokens
        problem, s = missing[i]
        response = res.text
        verdict = grade_many(spec.grader, [(response, problem.gold)], timeout_s=cfg.grade_timeout_s,
                             workers=cfg.grade_workers, answer_delimiter=answer_delim)[0]
        row = {
            "problem_id": problem.id,
            "sample_index": s,
            # the prompt, as lm-eval's --log_samples; never for a gated benchmark (it holds the question)
            **({"prompt": engine.prompt_text(prompt_of[problem.id])} if spec.public else {}),
            "response": response if spec.public else redact(response, problem.private),
            "thinking_tokens": int(res.thinking_tokens),
            "answer_tokens": int(res.answer_tokens),
            "total_tokens": int(res.thinking_tokens) + int(res.answer_tokens),
            "extracted": verdict.extracted,
            "correct": bool(verdict.correct),
            "grader_version": GRADER_VERSION,
            "gold": problem.gold,
            "finish_reason": res.finish_reason,
            "hit_cap": bool(res.hit_cap),
            "num_waits": int(res.num_waits_used),
            # spans in the stored response; a redacted response's offsets may have moved
            "forced": list(getattr(res, "forced", None) or []) if spec.public else _redacted_spans(response, problem.private, res),
            "thinking_cap": int(res.thinking_cap),
            "seed": seeds[i] if cfg.temperature > 0 else None,
        }
        if spec.grader == "choice":  # the letters it stated: more than one is counted in the metrics
            from harness.evaluation.grading.extract import choice_candidates
            row["candidate_letters"] = choice_candidates(response, answer_delim)
        store.append(row)
        rows[(problem.id, s)] = row
        tokens += row["total_tokens"]
        done = [r for key, r in rows.items() if key[0] in subset_ids and key[1] < k and not r.get("no_room")]
        acc = (sum(r["correct"] for r in done) / len(done)) if done else None
        elapsed = time.time() - t0
        progress.update(task, n_done(), tokens / elapsed if elapsed > 0 else None, acc, horizon)

    horizon = None
    for start in range(0, len(missing), chunk):
        part = list(range(start, min(start + chunk, len(missing))))
        horizon = n_done() + len(part)          # done when this call returns (the progress ETA's unit)
        engine.generate(cfg, [prompts[i] for i in part], budget, [seeds[i] for i in part],
                        lambda j, res, part=part: on_result(part[j], res))
    lost = [(p.id, s) for p, s in missing if (p.id, s) not in rows]
    if lost:
        raise RuntimeError(f"{spec.name}: the backend returned no result for {len(lost)} request(s)")
    return tokens, time.time() - t0

