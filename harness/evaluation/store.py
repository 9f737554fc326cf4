"""The run store: the only code that reads or writes an evaluation run folder.

Layout, one directory per (model, benchmark, settings):

    OUT/<model-slug>/<benchmark>/<hash12>/
        settings.json   everything that changes outputs (written first); hash12 = its sha256[:12];
                        the model's identity in it includes its weights (Engine.model_identity)
        samples.jsonl   one row per (problem_id, sample_index), appended + fsync'd as each completes
        samples.shard-K-of-N.jsonl   the same, written by `--shard K/N` (one file per shard)
        metrics.json    over every problem the folder holds (the union of its samples files), with
                        the problems the latest command asked for that are still missing; written
                        atomically under .metrics.lock, so the last shard to finish writes the whole
        .lock           flock: exclusive for an unsharded run, shared by shards (each also holds
                        .lock.shard-K-of-N exclusively): shards of one run write side by side

The hash leaves out --limit/--ids/--shard, so a larger --limit (or other ids) reuses finished samples.
A problem whose prompt leaves no room under the total budget gets rows marked "no_room": true
(no response, no verdict): it is counted as such, never scored.
A malformed line (a write cut by a kill) is reported in one line and dropped (the file is rewritten
without it), so a run killed at any moment loses only the samples in flight.

Non-public benchmarks (GPQA Diamond): responses are stored with any verbatim copy of the question
or its options replaced by REDACTED (`redact`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from harness.core.errors import UserError
from harness.core.io import DISK_FULL, atomic_write_text, dir_lock, disk_full_error, json_loads

REDACTED = "[REDACTED: benchmark question text]"
SAMPLES_FILE, METRICS_FILE, SETTINGS_FILE = "samples.jsonl", "metrics.json", "settings.json"
SAMPLE_FIELDS = ("problem_id", "sample_index", "response", "thinking_tokens", "answer_tokens",
                 "total_tokens", "extracted", "correct", "finish_reason", "hit_cap", "num_waits")


def model_slug(model: str) -> str:
    """Directory-safe name: 'Qwen/Qwen2.5-32B' -> 'Qwen--Qwen2.5-32B'; a local dir -> its last two
    path parts and a hash of its absolute path (ckpts/run3/checkpoint-100 -> run3--checkpoint-100-1a2b3c:
    two runs' step-100 checkpoints, or two runs named alike in other folders, get folders of their own); a
    trainer checkpoint is named after its run (runs/tiny/iw-sft/checkpoints/step-000010 -> iw-sft--step-000010-...)."""
    p = Path(model).expanduser()
    suffix = ""
    if p.exists():
        p = p.resolve()
        parts = p.parts[-2:]
        if parts[0] == "checkpoints" and len(p.parts) > 2:   # RUN/checkpoints/step-N: name the training run
            parts = (p.parts[-3], parts[1])
        suffix = "-" + hashlib.sha256(str(p).encode()).hexdigest()[:6]
    else:
        parts = tuple(model.strip("/").split("/"))[-2:]
    slug = "--".join(parts)
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", slug).strip("._") or "model"
    return slug[:89] + suffix


def settings_hash(settings: dict) -> str:
    blob = json.dumps(settings, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()



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



@contextlib.contextmanager
def dropped_if_failed_empty(run_dir: Path, out_root: Path, fresh: bool):
    """A run folder made by this call that fails before its first sample is removed (with the
    model/benchmark folders it leaves empty): a failed eval leaves nothing half-written."""
    try:
        yield
    except BaseException:
        if fresh and not any(p.stat().st_size > 0 for p in samples_files(run_dir)):
            with contextlib.suppress(UserError, OSError):
                with dir_lock(run_dir, "busy"):     # never under another shard still working here
                    shutil.rmtree(run_dir, ignore_errors=True)
            for parent in (run_dir.parent, run_dir.parent.parent):
                if parent != out_root:
                    with contextlib.suppress(OSError):
                        parent.rmdir()          # only when empty
        raise


@contextlib.contextmanager
def run_lock(run_dir: Path, shard: tuple[int, int] | None = None):
    """An unsharded run has the folder to itself; shards share it, one writer per shard."""
    busy = f"another eval is writing to {run_dir}; wait for it or use another --out"
    if shard is None:
        with dir_lock(run_dir, busy):
            yield
        return
    k, n = shard
    with dir_lock(run_dir, f"an unsharded eval is writing to {run_dir}; wait for it or use another --out", shared=True), \
            dir_lock(run_dir, f"shard {k}/{n} is already running in {run_dir}; run each shard once",
                     name=f".lock.shard-{k}-of-{n}"):
        yield


def samples_file(run_dir: Path, shard: tuple[int, int] | None = None) -> Path:
    return Path(run_dir) / (SAMPLES_FILE if shard is None else f"samples.shard-{shard[0]}-of-{shard[1]}.jsonl")


def samples_files(run_dir: Path) -> list[Path]:
    """Every samples file of a run: the unsharded one first, then the shards' in name order."""
    run_dir = Path(run_dir)
    return [p for p in [run_dir / SAMPLES_FILE] if p.is_file()] + sorted(run_dir.glob("samples.shard-*-of-*.jsonl"))


@contextlib.contextmanager
def metrics_lock(run_dir: Path):
    """Held (blocking, briefly) while metrics.json is computed and written: the last writer has
    read every row the others appended before they took it."""
    with open(Path(run_dir) / ".metrics.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------ samples


def parse_rows(data: bytes):
    """(rows by key, kept lines, malformed line numbers, duplicate count, last non-empty line number)."""
    rows: dict[tuple[str, int], dict] = {}
    kept: list[bytes] = []
    bad: list[int] = []
    dups = last = 0
    for n, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        last = n
        try:
            row = json.loads(line.decode("utf-8"))
            key = (str(row["problem_id"]), int(row["sample_index"]))
            if not isinstance(row.get("correct"), bool) and row.get("no_room") is not True:
                raise ValueError("no verdict")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            bad.append(n)
            continue
        if key in rows:
            dups += 1
            continue
        rows[key] = row
        kept.append(line)
    return rows, kept, bad, dups, last


def read_samples(run_dir: Path) -> dict[tuple[str, int], dict]:
    """A run folder's rows by (problem_id, sample_index), over all its samples files (shards
    included; the first file holding a pair wins), read only: a malformed line (a cut write, or a
    shard's line being written now) is skipped here and dropped by its writer on its next pass."""
    rows: dict[tuple[str, int], dict] = {}
    for path in samples_files(run_dir):
        for key, row in parse_rows(path.read_bytes())[0].items():
            rows.setdefault(key, row)
    return rows


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
        rows, kept, bad, dups, last = parse_rows(data)
        needs_newline = bool(data) and not data.endswith(b"\n")
        if bad:
            where = "the last line" if bad == [last] else f"lines {', '.join(map(str, bad[:5]))}"
            self.warn(f"{self.path}: dropped {len(bad)} malformed line(s) ({where}: an interrupted write); "
                      "those samples will be generated again")
        if dups:
            self.warn(f"{self.path}: dropped {dups} duplicate row(s) (same problem_id and sample_index)")
        if bad or dups or needs_newline:
            atomic_write_text(self.path, "".join(line.decode("utf-8") + "\n" for line in kept))
        return rows

    def append(self, row: dict) -> None:
        """One row, written whole or not at all: a failed write (a full disk) is cut back off."""
        if self._f is None:
            self._f = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        end = os.fstat(self._f).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._f, view):]
            os.fsync(self._f)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self._f, end)
            if e.errno in DISK_FULL:
                raise disk_full_error(self.path.parent, len(data)) from None
            raise

    def close(self) -> None:
        if self._f is not None:
            os.close(self._f)
            self._f = None


def read_json(path: Path):
    """The file's JSON, or None when it is missing or damaged (it is then written again)."""
    try:
        return json_loads(path.read_bytes(), str(path))
    except (OSError, ValueError, UserError):
        return None


# ------------------------------------------------------------------ finished runs, read back


@dataclass
class Run:
    path: Path
    benchmark: str
    metrics: dict
    scores: dict[str, float]          # problem id -> fraction of samples correct
    thinking: dict[str, float]        # problem id -> mean thinking tokens
    outcomes: dict[str, list[bool]] = field(default_factory=dict)   # problem id -> verdict per sample index
    samples_per_problem: int = 1
    missing: list[str] = field(default_factory=list)   # asked for, not (all K samples) stored yet
    no_room: list[str] = field(default_factory=list)   # prompt left no room under the total budget

    @property
    def weights_id(self) -> str | None:
        return self.metrics.get("weights_id")


def load_run(path: Path, ids: list[str] | None = None) -> Run:
    """A finished run folder read back: every problem with all K samples (the union of its samples
    files), or only `ids` when given (then `missing` lists those not all there). Problems whose
    prompt had no room are listed in `no_room`, not scored."""
    path = Path(path)
    mfile = path / METRICS_FILE
    if not mfile.is_file():
        raise UserError(f"{path} has no metrics.json: not a finished evaluation run (re-run its `iwsft eval` to finish it)")
    try:
        metrics = json_loads(mfile.read_bytes(), str(mfile))
    except (OSError, ValueError):
        metrics = None
    if not isinstance(metrics, dict):
        raise UserError(f"{mfile} is damaged (not a JSON object); re-run that run's `iwsft eval` command to write it "
                        "again from its samples")
    for key, typ in (("problem_ids", list), ("missing_ids", list), ("samples_per_problem", int), ("benchmark", str)):
        if metrics.get(key) is not None and not isinstance(metrics[key], typ):
            raise UserError(f"{mfile} is damaged ({key} is not a {typ.__name__}); re-run that run's `iwsft eval` "
                            "command to write it again from its samples")
    settings = read_json(path / SETTINGS_FILE)
    settings = settings if isinstance(settings, dict) else {}
    k = int(settings.get("samples") or metrics.get("samples_per_problem") or 1)
    per, think, no_room = defaultdict(dict), defaultdict(list), set()
    for (pid, s), row in read_samples(path).items():
        if s >= k:
            continue
        if row.get("no_room"):
            no_room.add(pid)
            continue
        per[pid][s] = bool(row["correct"])
        think[pid].append(float(row.get("thinking_tokens") or 0))
    complete = [pid for pid in per if len(per[pid]) == k and pid not in no_room]
    if ids is None:
        order = {pid: i for i, pid in enumerate(metrics.get("problem_ids") or [])}
        keys = sorted(complete, key=lambda q: (order.get(q, len(order)), q))
        missing = [q for q in metrics.get("missing_ids") or [] if q not in set(complete) | no_room]
        rooms = sorted(no_room)
    else:
        have = set(complete)
        keys = [q for q in ids if q in have]
        missing = [q for q in ids if q not in have and q not in no_room]
        rooms = [q for q in ids if q in no_room]
    outcomes = {q: [per[q][s] for s in range(k)] for q in keys}
    scores = {q: sum(v) / k for q, v in outcomes.items()}
    thinking = {q: sum(think[q]) / len(think[q]) for q in keys}
    return Run(path, metrics.get("benchmark") or path.parent.name, metrics, scores, thinking, outcomes, k,
               missing, rooms)


def find_runs(path: Path) -> dict[str, Run]:
    """benchmark -> its finished run under `path`: a run folder, a model folder (OUT/<model-slug>/)
    or an `iwsft eval --out` folder holding one model. Several runs of one benchmark (other
    settings) or several models are refused: which one is meant is the user's call, not ours."""
    path = Path(path)
    if (path / "metrics.json").is_file():
        r = load_run(path)
        return {r.benchmark: r}
    found = sorted(path.glob("*/*/metrics.json"))
    if not found:
        models = sorted({m.parents[2] for m in path.glob("*/*/*/metrics.json")})
        if len(models) == 1:
            return find_runs(models[0])
        if models:
            raise UserError(f"{path} holds evaluations of {len(models)} models ({', '.join(m.name for m in models[:4])}); "
                            f"give one model's folder, e.g. {models[0]}")
        raise UserError(f"no finished evaluation runs under {path}; give an `iwsft eval --out` folder, a model folder "
                        "in it, or a run folder")
    by_bench: dict[str, list[Run]] = defaultdict(list)
    for m in found:
        r = load_run(m.parent)
        by_bench[r.benchmark].append(r)
    for bench, rs in by_bench.items():
        if len(rs) > 1:
            differ = ", ".join(setting_names(differing_settings([r.path for r in rs]))) or "see their settings.json"
            raise UserError(f"{path} holds {len(rs)} finished {bench} runs with different settings "
                            f"({differ}); give one run folder, e.g. {rs[0].path}")
    return {b: rs[0] for b, rs in by_bench.items()}


# settings.json keys that `iwsft eval` sets under another name: the flag users know
SETTING_FLAGS = {"max_new_tokens": "--total-budget", "prompt": "--system/--delimiters/--chat-template-kwargs"}


def setting_names(keys: list[str]) -> list[str]:
    """settings.json keys as a user knows them: a key set by a flag of another name is given as that
    flag, its key beside it (`--total-budget (max_new_tokens)`); the others as they are."""
    return [f"{SETTING_FLAGS[k]} ({k} in settings.json)" if k in SETTING_FLAGS else k for k in keys]


def differing_settings(run_dirs: list[Path], ignore: tuple[str, ...] = ()) -> list[str]:
    """The settings.json keys whose values differ between the runs (`ignore` left out)."""
    settings = []
    for d in run_dirs:
        try:
            settings.append(json.loads((Path(d) / "settings.json").read_text()))
        except (OSError, json.JSONDecodeError):
            settings.append({})
    return sorted(k for k in {k for s in settings for k in s} - set(ignore)
                  if len({json.dumps(x.get(k), sort_keys=True) for x in settings}) > 1)
