"""LoRA training through peft: wrap the policy, switch the adapters off for pi_ref, save and resume.

pi_ref is the base model: the reference cache is computed with `disable_adapter()`, so it holds the
base model's log-probs whatever the adapters hold. peft initialises B = 0, so at step 0 the policy's
forward adds an exact zero to every adapted layer and the weights are exactly 1.

A checkpoint folder holds the adapter in PEFT's format (adapter_config.json, adapter_model.safetensors),
which peft and vLLM's LoRA support load; with lora_merge_on_save, `merged/` beside it holds base +
adapter merged by peft (`merge_and_unload`), a plain model folder.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from harness.core.errors import UserError


def wrap(model, cfg):
    """The model with fresh adapters (only they train); the base weights are frozen."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_target_modules
    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules="all-linear" if targets == ["all-linear"] else list(targets),
                        bias="none", task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as e:   # e.g. target modules not found in the model
        raise UserError(f"lora_target_modules {targets!r} do not fit {type(model).__name__} "
                        f"({' '.join(str(e).split())[:160]}); name its linear layers, e.g. [q_proj, v_proj]") from None


def check_targets(model, cfg) -> None:
    """Before anything is written: each named target matches some module of the model."""
    if cfg.lora_target_modules == ["all-linear"]:
        return
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in cfg.lora_target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise UserError(f"lora_target_modules {missing} do not fit {type(model).__name__} (its linear layers: "
                        f"{', '.join(linear[:10])}); name those, or use [all-linear]")


def adapters_off(model):
    """Context: the base model (pi_ref) for a LoRA model; nothing for a plain one."""
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)
    return inner.disable_adapter() if hasattr(inner, "disable_adapter") else contextlib.nullcontext()


def _adapter_key(name: str, adapter: str = "default") -> str:
    """A model parameter's name as PEFT's adapter file spells it (without the adapter's name)."""
    return name.replace(f".{adapter}.", ".")


def load_adapter_weights(model, folder: Path, is_main: bool, world_size: int) -> None:
    """Collective: a LoRA checkpoint's adapter weights into the (possibly wrapped) model; the base
    weights stay the base model's. Through the same state-dict API as full checkpoints."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        raise UserError(f"checkpoint {folder} holds no adapter ({path.name} is missing) but the recipe sets lora_rank; "
                        "delete the checkpoint to restart, or use the recipe it was trained with")
    # Every rank: the names (the call is collective under FSDP); adapter tensors are the `lora_` ones.
    names = [n for n in get_model_state_dict(model) if ".lora_" in n]
    full = {}
    if is_main or world_size == 1:
        saved = load_file(str(path))
        wanted = {_adapter_key(n): n for n in names}
        missing, extra = set(wanted) - set(saved), set(saved) - set(wanted)
        if missing or extra:
            raise UserError(f"checkpoint {folder}'s adapter does not match the recipe's LoRA ({len(missing)} missing, "
                            f"{len(extra)} unexpected tensors); delete it to restart, or check lora_rank / lora_target_modules")
        full = {wanted[k]: v for k, v in saved.items()}
    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=world_size > 1, strict=False)
    set_model_state_dict(model, full, options=opts)


def save_adapter(unwrapped, state_dict: dict, folder: Path, base_model: str) -> None:
    """PEFT's adapter files from a full state dict (peft keeps the adapter's tensors)."""
    unwrapped.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
    cfg_path = folder / "adapter_config.json"
    meta = json.loads(cfg_path.read_text())
    meta["base_model_name_or_path"] = base_model   # the resolved folder, not the harness alias
    cfg_path.write_text(json.dumps(meta, indent=2, sort_keys=True))


def save_merged(base_model: str, adapter_folder: Path, out: Path, tokenizer, dtype: str) -> None:
    """Base + adapter merged by peft into a plain model folder (loads the base afresh on CPU, so the
    training model, sharded or not, is left as it is)."""
    from peft import PeftModel

    from harness.core.models import load_model

    base = load_model(base_model, dtype=dtype, device="cpu")
    with torch.no_grad():
        merged = PeftModel.from_pretrained(base, str(adapter_folder)).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
