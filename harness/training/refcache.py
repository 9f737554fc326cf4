"""Reference log-probs, computed once before training and cached on disk.

pi_ref = theta_0 never changes, so no second resident model is needed during training. The cache
is computed with the policy itself before the first step, through `batch_logprobs`, over exactly
the micro-batches of the first epoch (same composition, padding and shapes as training), so at
step 0 the cached values are bitwise equal to the policy's and the weights are exactly 1.

A cache file is keyed by a hash of (reference model, data fingerprint, tokenizer, block size,
batch layout); its metadata repeats those so a file from another model is refused, not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from harness.core.errors import UserError
from harness.core.io import disk_full_as_user_error, fsync_dir, fsync_tree, give_plain_mode


def model_identity(model, name: str) -> str:
    """Name, config and a checksum of a few parameters: distinguishes models and fine-tunes."""
    h = hashlib.sha256(name.encode())
    h.update(model.config.to_json_string(use_diff=False).encode())
    params = list(model.parameters())
    with torch.no_grad():
        for p in params[:2] + params[-2:]:
            h.update(p.detach().float().cpu().numpy().tobytes()[:1 << 20])
    return h.hexdigest()[:16]


def cache_key(meta: dict) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]


def default_dir() -> Path:
    return Path(os.environ.get("IWSFT_CACHE", Path.home() / ".cache" / "iwsft")) / "ref"


def cache_path(folder: str | Path | None, meta: dict) -> Path:
    """Where the cache for `meta` lives: in `folder` (a recipe's ref_cache_dir) or the default cache folder."""
    return (Path(folder) if folder else default_dir()) / f"{cache_key(meta)}.safetensors"


def partial_path(path: Path) -> Path:
    """Where an unfinished pass keeps the micro-batches it has done (beside the cache it will become)."""
    return path.with_name(path.stem + ".partial.safetensors")


def collect(batches: Iterable, logprobs: Callable, acc, path: Path, meta: dict, partial: Path | None = None,
            every_s: float = 60.0, say: Callable[[str], None] | None = None) -> dict[int, torch.Tensor]:
    """Collective. Reference log-probs of every example in `batches` (this process's micro-batches of the
    first epoch), merged over processes, saved on rank 0 and returned on every rank.

    `logprobs(batch)` is the policy's [rows, tokens] log-probs of the batch's next tokens; each example
    keeps the n - 1 values of its own span (`batch.spans()`), first sighting wins (an example seen twice
    in one epoch gets identical values anyway).

    `partial` (one process): the values so far are saved there every `every_s` seconds and when the
    pass is interrupted (Ctrl-C, SIGTERM), and a re-run skips the micro-batches it holds: the pass is a
    fixed sequence of independent forwards, so the resumed cache equals an uninterrupted one."""
    ref: dict[int, torch.Tensor] = {}
    skip = 0
    if partial is not None and partial.is_file():
        try:
            ref, skip = load_partial(partial, meta)
        except (DamagedCache, UserError) as e:
            ref, skip = {}, 0
            if say:
                say(f"reference log-probs: partial file {partial} not used ({e}); starting the pass again")
        else:
            if say:
                say(f"reference log-probs: resuming after {skip} micro-batches done before ({partial})")
    done, last = skip, time.monotonic()
    keep = lambda: save_cache(partial, ref, {**meta, PARTIAL_KEY: done})  # noqa: E731
    try:
        for k, b in enumerate(batches):
            if k < skip:
                continue
            lp = logprobs(b).detach().float().cpu()
            for i, (row, start, n) in zip(b.example_ids, b.spans()):
                ref.setdefault(i, lp[row, start : start + n - 1].clone())
            done = k + 1
            if partial is not None and time.monotonic() - last >= every_s:
                keep()
                last = time.monotonic()
    except KeyboardInterrupt:
        if partial is not None and done > skip:
            keep()
            if say:
                say(f"reference log-probs: {done} micro-batches kept in {partial}; re-run to resume the pass")
        raise
    if acc.num_processes > 1:
        from accelerate.utils import gather_object

        merged: dict[int, torch.Tensor] = {}
        for part in gather_object([ref]):
            for k, v in part.items():
                merged.setdefault(k, v)
        ref = merged
    if acc.is_main_process:
        save_cache(path, ref, meta)
        if partial is not None:
            partial.unlink(missing_ok=True)
    acc.wait_for_everyone()
    return ref


PARTIAL_KEY = "partial_micro_batches"


def load_partial(path: Path, meta: dict) -> tuple[dict[int, torch.Tensor], int]:
    """(values, micro-batches done) of an unfinished pass for exactly `meta`; DamagedCache otherwise."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            saved = json.loads((f.metadata() or {}).get("meta", "{}"))
    except Exception as e:
        raise DamagedCache(f"{type(e).__name__}") from None
    done = saved.pop(PARTIAL_KEY, None) if isinstance(saved, dict) else None
    if not isinstance(done, int) or done < 0 or json.dumps(saved, sort_keys=True) != json.dumps(meta, sort_keys=True):
        raise DamagedCache("made for other settings")
    return load_cache(path, {**meta, PARTIAL_KEY: done}), done


def save_cache(path: Path, logprobs: dict[int, torch.Tensor], meta: dict) -> None:
    ids = sorted(logprobs)
    flat = torch.cat([logprobs[i].float().cpu() for i in ids]) if ids else torch.zeros(0)
    lengths = torch.tensor([logprobs[i].numel() for i in ids], dtype=torch.long)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        with disk_full_as_user_error(path.parent, flat.numel() * 4 + lengths.numel() * 16):
            save_file({"flat": flat, "lengths": lengths, "ids": torch.tensor(ids, dtype=torch.long)}, str(tmp),
                      metadata={"meta": json.dumps(meta, sort_keys=True)})
            give_plain_mode(tmp)        # safetensors writes 0600; a shared cache is read by the group too
            fsync_tree(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    fsync_dir(path.parent)


class DamagedCache(Exception):
    """A cache file that cannot be read as written (cut short, garbage): computed again, not refused."""


def load_cache(path: Path, expected_meta: dict) -> dict[int, torch.Tensor]:
    """The cached log-probs by example id; DamagedCache for a file that does not read back whole,
    UserError for a whole file computed for another model, dataset or block size."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a mapping")
    except Exception as e:      # safetensors' own error type, JSON, OS errors: the file is not as written
        raise DamagedCache(f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else 'unreadable'}") from None
    for key in ("model", "data", "block_size"):
        if meta.get(key) != expected_meta.get(key):
            what = {"model": "reference model", "data": "dataset", "block_size": "block size"}[key]
            raise UserError(
                f"reference cache {path} was computed for another {what} "
                f"({meta.get(key)!r}, this run needs {expected_meta.get(key)!r}); delete it or set ref_cache_dir elsewhere"
            )
    try:
        t = load_file(str(path))
        ids, lengths, flat = t["ids"].tolist(), t["lengths"].tolist(), t["flat"]
    except Exception as e:
        raise DamagedCache(f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else 'unreadable'}") from None
    if len(ids) != len(lengths) or sum(lengths) != flat.numel() or min(lengths, default=0) < 0:
        raise DamagedCache("its ids, lengths and values disagree")
    out, off = {}, 0
    for i, n in zip(ids, lengths):
        out[i] = flat[off : off + n]
        off += n
    return out


def incomplete(ref: dict[int, torch.Tensor], examples) -> str | None:
    """Why the cache does not cover every example with one value per predicted token, or None."""
    for i, ex in enumerate(examples):
        if i not in ref:
            return f"no values for example {i}"
        want = len(ex.input_ids) - 1          # a next-token log-prob per token but the first
        if ref[i].numel() != want:
            return f"example {i} has {ref[i].numel()} values, {want} expected"
    return None
