"""`iwsft push`: a trained checkpoint to a hub model repo, with a model card.

Where things go: the final model on the repo's `main`; a step checkpoint (checkpoints/step-N) on a
branch `step-N` of the same repo (created from main), so `--revision step-N` loads it, as Pythia's
intermediate checkpoints. Training state (optimizer shards, trainer_state.pt) is not uploaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from harness.core.errors import UserError
from harness.publish import hub

NOT_UPLOADED = ["optimizer/*", "trainer_state.pt", ".*"]     # training state and hidden files stay local


def step_of(folder: Path) -> int | None:
    m = re.fullmatch(r"step-0*(\d+)", folder.name)
    return int(m.group(1)) if m else None


def revision_of(folder: Path) -> str:
    step = step_of(folder)
    return "main" if step is None else f"step-{step}"


def plan(path: str | Path, steps: list[int] | str | None = None) -> list[tuple[Path, str]]:
    """(model folder, revision) to push, final first. `path`: a model folder (final/ or
    checkpoints/step-N), or a training run's folder (its final/, and the `steps` checkpoints:
    a list of step numbers or 'all' of those on disk)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise UserError(f"{path} is not a folder; give a checkpoint (RUN/final, RUN/checkpoints/step-N) or a training run folder")
    if (p / "config.json").is_file():
        if steps:
            raise UserError(f"--steps picks checkpoints of a training run; {path} is one model folder (give the run's folder)")
        out = [(p, revision_of(p))]
    elif (p / "final").is_dir() or (p / "checkpoints").is_dir():
        saved = {step_of(c): c for c in sorted((p / "checkpoints").glob("step-*")) if (c / "config.json").is_file()}
        want = sorted(saved) if steps == "all" else sorted(set(steps or []))
        missing = [s for s in want if s not in saved]
        if missing:
            have = ", ".join(str(s) for s in sorted(saved)) or "none"
            raise UserError(f"{path} has no checkpoint of step {', '.join(map(str, missing))} on disk (saved: {have}); "
                            "pick saved steps (push_steps keeps them past keep_checkpoints)")
        out = [(p / "final", "main")] if (p / "final" / "config.json").is_file() else []
        out += [(saved[s], f"step-{s}") for s in want]
        if not out:
            raise UserError(f"{path} has no final model yet (training not finished); give --steps N to push a step checkpoint")
    else:
        raise UserError(f"{path} holds no model (no config.json) and is not a training run folder")
    for folder, _ in out:
        if not any(folder.glob("*.safetensors")):
            raise UserError(f"{folder} has no .safetensors weights; not a complete checkpoint")
    return out


def model_card(folder: Path, revision: str, repo_id: str):
    """A ModelCard stating the recipe, the objective preset, the data and this harness's commit."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = json.loads((folder / "iwsft_train.json").read_text()) if (folder / "iwsft_train.json").is_file() else {}
    cfg, data = meta.get("config") or {}, meta.get("data")
    hub_id = lambda s: isinstance(s, str) and s.count("/") == 1 and not Path(s).expanduser().exists()   # noqa: E731
    card_data = ModelCardData(library_name="transformers", tags=["iw-sft", "importance-weighted-sft", cfg.get("weighting", "sft")],
                              base_model=cfg.get("model") if hub_id(cfg.get("model")) else None,
                              datasets=[cfg["dataset"]] if hub_id(cfg.get("dataset")) else None)
    step = step_of(folder)
    objective = cfg.get("weighting", "unknown")
    overrides = cfg.get("weighting_overrides") or {}
    lines = [
        "---", card_data.to_yaml(), "---", "",
        f"# {repo_id.split('/')[-1]}", "",
        f"Fine-tuned with the iwsft-harness (importance-weighted SFT, Qin & Springenberg 2025): "
        f"{'the final model' if step is None else f'the checkpoint after {step} optimizer steps'} "
        f"(this revision: `{revision}`).", "",
        "| | |", "|---|---|",
        f"| objective preset | `{objective}`" + (f" with overrides `{json.dumps(overrides)}`" if overrides else "") + " |",
        f"| q source | `{cfg.get('q_source', 'n/a')}` |",
        f"| base model (pi_ref) | `{cfg.get('model', 'unknown')}` |",
        f"| data | `{cfg.get('dataset', 'unknown')}`" + (f" (split `{cfg['dataset_split']}`)" if cfg.get("dataset_split") else "") + " |",
        f"| harness git commit (training) | `{meta.get('harness_commit', 'not recorded')}` |",
        f"| harness git commit (this push) | `{hub.harness_commit()}` |", "",
        "## Data", "", "```json", json.dumps(data, indent=1, sort_keys=True) if data is not None else "not recorded", "```", "",
        "## Recipe", "", "The training recipe (`iwsft train RECIPE`) as run:", "",
        "```yaml", yaml.safe_dump(cfg, sort_keys=False).strip() if cfg else "not recorded (not trained by iwsft)", "```", "",
    ]
    return ModelCard("\n".join(lines))


def push(path: str | Path, repo_id: str, *, steps: list[int] | str | None = None, private: bool = False,
         token: str | None = None, console=print) -> list[str]:
    """Push the planned folders; returns the revisions written. Everything is checked before the
    first upload."""
    repo_id = hub.check_repo_id(repo_id)
    todo = plan(path, steps)
    tok = hub.token(token)
    hub.check_reachable()
    api = hub.api(tok)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    for folder, revision in todo:
        if revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
                          ignore_patterns=NOT_UPLOADED, commit_message=f"iwsft push: {folder.parent.name}/{folder.name}")
        # The card through HfApi.upload_file (ModelCard.push_to_hub would first ask the hub to validate it).
        api.upload_file(path_or_fileobj=str(model_card(folder, revision, repo_id)).encode(), path_in_repo="README.md",
                        repo_id=repo_id, repo_type="model", revision=revision, commit_message="iwsft push: model card")
        console(f"pushed {folder} -> {repo_id}@{revision}")
    return [r for _, r in todo]
