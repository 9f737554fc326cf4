"""A LoRA (peft) adapter on the evaluated base model: `iwsft eval --model BASE --adapter PATH_OR_HUB_ID`.

The HF backend loads it with peft and merges it into the weights (PeftModel.from_pretrained, then
merge_and_unload: plain-model speed); vLLM starts with enable_lora and sends every request with one
LoRARequest. The adapter's identity (its files' fingerprint, harness.core.fingerprint) keys the
run folder. Checked before any model loads: peft installed, a peft adapter folder, made for this base
(adapter_config.json's base_model_name_or_path).
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import UserError

PIP_HINT = "pip install 'iwsft-harness[lora]' (or pip install peft)"
CONFIG = "adapter_config.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# The hub model the alias's GGUF was quantised from: an adapter trained on it fits the alias.
ALIAS_ORIGINS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# max_lora_rank values vLLM accepts
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class Adapter:
    name: str                  # as the user wrote it
    path: str                  # local folder with adapter_config.json (a hub id's cached snapshot)
    kind: str                  # "local" | "hub"
    config: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def base(self) -> str | None:
        return self.config.get("base_model_name_or_path") or None

    @property
    def rank(self) -> int:
        return int(self.config.get("r") or 0)

    def identity(self) -> str:
        """Its files' fingerprint (12 hex): a retrained adapter in the same folder is another run."""
        from harness.core.fingerprint import folder_fingerprint

        return folder_fingerprint(self.path)[:12]


def check_peft() -> None:
    try:
        found = importlib.util.find_spec("peft") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UserError(f"--adapter needs the peft package, which is not installed; fix: {PIP_HINT}")


def resolve_adapter(name: str) -> Adapter:
    """The adapter's folder and config; a hub id is fetched (or read from the cache) now."""
    name = str(name).strip()
    if not name:
        raise UserError("--adapter is empty; give an adapter folder or hub id, or leave it out")
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / CONFIG).is_file():
            raise UserError(f"--adapter {name}: the folder holds no {CONFIG}, so it is not a peft adapter; point at the "
                            "folder that PeftModel.save_pretrained wrote")
        return Adapter(name, str(local.resolve()), "local", _read_config(local / CONFIG, name))
    if local.exists():
        raise UserError(f"--adapter {name} is a file; give the adapter's folder (with {CONFIG} in it) or a hub id")
    if name.startswith(("/", ".", "~")) or not _HUB_ID.match(name):
        raise UserError(f"--adapter {name}: no such folder, and not a hub id (owner/name); check the path")
    from harness.core import hub

    why = hub.unavailable(name)
    if why:
        raise UserError(f"--adapter {name} is not in the local hub cache and the hub is unreachable ({why}); download "
                        "it where there is a network, or give its folder")
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name))
    except Exception as e:      # gated, missing, no token: one line
        raise UserError(f"--adapter {name}: cannot fetch it from the hub ({type(e).__name__}); check the id and your "
                        "HF token, or give its folder") from None
    if not (folder / CONFIG).is_file():
        raise UserError(f"--adapter {name}: the hub repo holds no {CONFIG}, so it is not a peft adapter")
    return Adapter(name, str(folder), "hub", _read_config(folder / CONFIG, name))


def _read_config(path: Path, name: str) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"--adapter {name}: {CONFIG} is unreadable ({type(e).__name__}); save the adapter again") from None
    if not isinstance(config, dict):
        raise UserError(f"--adapter {name}: {CONFIG} is not a JSON object; save the adapter again")
    return config


def _norm(name: str) -> str:
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name.strip().rstrip("/")


def base_names(model: str, resolved) -> set[str]:
    """Names an adapter's config may give for this base model."""
    names = {_norm(model), _norm(resolved.path), resolved.name}
    alias = resolved.info.get("alias") if resolved.kind == "alias" else None
    if alias:
        names |= {alias, ALIAS_ORIGINS.get(alias, alias)}
    return names


def check_fits(adapter: Adapter, model: str, resolved) -> None:
    """UserError when the adapter names another base model than `model`."""
    base = adapter.base
    if base is None:
        return                  # nothing to compare; a shape mismatch still fails at load, in one line
    names = base_names(model, resolved)
    alias = resolved.info.get("alias") if resolved.kind == "alias" else None
    if _norm(base) in names or (alias and Path(base).name == alias):   # the alias's cache folder, anywhere
        return
    if resolved.kind == "local" and Path(base).is_dir() and (Path(base) / "config.json").is_file():
        from harness.core.fingerprint import folder_fingerprint

        if folder_fingerprint(base) == folder_fingerprint(resolved.path):    # a copy of the same weights
            return
    raise UserError(f"--adapter {adapter.name} was made for base model {base!r} (base_model_name_or_path in its "
                    f"{CONFIG}), not {model!r}; evaluate it with --model {base}, or correct that field if it is the "
                    "same model under another name")


def check_adapter(adapter_name: str, model: str, backend: str) -> Adapter:
    """Everything about --adapter that can be known before a model loads."""
    from harness.core.models import resolve_model

    check_peft()
    adapter = resolve_adapter(adapter_name)
    check_fits(adapter, model, resolve_model(model))
    if backend == "vllm" and str(adapter.config.get("peft_type", "LORA")).upper() != "LORA":
        raise UserError(f"--adapter {adapter_name} is a {adapter.config.get('peft_type')} adapter; vLLM serves LoRA "
                        "adapters only: use --backend hf")
    return adapter


def apply_to_hf_model(model, adapter: Adapter):
    """The base model with the adapter merged into its weights (same outputs as the PeftModel, faster)."""
    check_peft()
    from peft import PeftModel

    try:
        merged = PeftModel.from_pretrained(model, adapter.path).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as e:       # shapes or module names of another architecture
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--adapter {adapter.name} does not fit this base model ({first[:200]}); use the base model "
                        "it was trained on") from None
    merged.eval()
    return merged


def vllm_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds `rank`."""
    for r in VLLM_RANKS:
        if rank <= r:
            return r
    raise UserError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank {VLLM_RANKS[-1]}; use --backend hf")
