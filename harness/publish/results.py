"""`iwsft push-results`: evaluation runs (metrics, settings, per-sample rows) to a hub dataset repo.

Every run folder under RUN_DIR is staged as <model-slug>/<benchmark>/<hash12>/ with its
metrics.json, settings.json and one samples.jsonl (the union of its shards' files). Samples of a
non-public benchmark (GPQA Diamond), or of a benchmark this harness does not know, keep only the
fields listed in SAFE_FIELDS: any question, prompt or option text is dropped, and their responses
are the store's redacted ones, redacted once more against the questions and options when the
benchmark's data is at hand (`--gpqa-csv`, or IWSFT_GPQA_CSV).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from harness.core.errors import UserError
from harness.evaluation import store
from harness.publish import hub

SAFE_FIELDS = (*store.SAMPLE_FIELDS, "no_room", "forced", "prompt_tokens", "total_budget", "gold", "thinking_cap", "seed")


def run_dirs(root: str | Path) -> list[Path]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; give an `iwsft eval --out` folder, a model folder in it or a run folder")
    found = sorted({m.parent for m in root.rglob(store.METRICS_FILE)} | ({root} if (root / store.METRICS_FILE).is_file() else set()))
    found = [d for d in found if (d / store.SETTINGS_FILE).is_file()]
    if not found:
        raise UserError(f"no finished evaluation runs under {root} (a run folder holds metrics.json and settings.json)")
    return found


def is_public(benchmark: str | None) -> bool:
    from harness.evaluation.benchmarks import get_benchmark

    try:
        return bool(benchmark) and get_benchmark(benchmark).public
    except (UserError, KeyError, ValueError):
        return False      # unknown: treated as private


def private_texts(benchmark: str, gpqa_csv: str | None) -> list[str]:
    """Every question and option text of a non-public benchmark, when its data loads here; else []."""
    import os

    from harness.evaluation.benchmarks import BenchmarkUnavailable, get_benchmark

    csv = gpqa_csv or os.environ.get("IWSFT_GPQA_CSV")
    if not csv:
        return []
    try:
        return [t for p in get_benchmark(benchmark).load({"gpqa_csv": csv}) for t in p.private]
    except (BenchmarkUnavailable, UserError):
        return []


def public_row(row: dict, public: bool, private: list[str] = ()) -> dict:
    if public:
        return dict(row)
    out = {k: row[k] for k in SAFE_FIELDS if k in row}
    if private:
        out = {k: store.redact(v, private) if isinstance(v, str) else v for k, v in out.items()}
    return out


def stage(root: str | Path, dest: Path, gpqa_csv: str | None = None) -> list[dict]:
    """Write the upload folder; returns one summary per run (for the card)."""
    summary = []
    for d in run_dirs(root):
        metrics = json.loads((d / store.METRICS_FILE).read_text())
        settings = json.loads((d / store.SETTINGS_FILE).read_text())
        bench = metrics.get("benchmark") or settings.get("benchmark") or d.parent.name
        public = is_public(bench)
        rel = Path(d.parent.parent.name, d.parent.name, d.name)     # <model-slug>/<benchmark>/<hash12>
        out = dest / rel
        out.mkdir(parents=True, exist_ok=True)
        (out / store.METRICS_FILE).write_text(json.dumps(metrics, indent=1, sort_keys=True))
        (out / store.SETTINGS_FILE).write_text(json.dumps(settings, indent=1, sort_keys=True))
        private = [] if public else private_texts(bench, gpqa_csv)
        rows = [public_row(r, public, private) for _, r in sorted(store.read_samples(d).items())]
        (out / store.SAMPLES_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        summary.append({"path": rel.as_posix(), "benchmark": bench, "n": metrics.get("n"), "accuracy": metrics.get("accuracy"),
                        "public": public})
    return summary


def card_text(repo_id: str, summary: list[dict]) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(tags=["iw-sft", "evaluation"], pretty_name=repo_id.split("/")[-1])
    lines = ["---", data.to_yaml(), "---", "", f"# {repo_id.split('/')[-1]}", "",
             f"Evaluation runs of the iwsft-harness (harness git commit `{hub.harness_commit()}`). Each folder "
             "holds metrics.json, settings.json (everything that changes outputs) and samples.jsonl (one row per "
             "problem and sample). GPQA Diamond rows carry no question, prompt or option text.", "",
             "| run | benchmark | n | accuracy |", "|---|---|---|---|"]
    for s in summary:
        acc = f"{s['accuracy']:.4f}" if isinstance(s["accuracy"], (int, float)) else "n/a"
        lines.append(f"| `{s['path']}` | {s['benchmark']} | {s['n']} | {acc} |")
    return str(DatasetCard("\n".join(lines) + "\n"))


def push(root: str | Path, repo_id: str, *, private: bool = False, token: str | None = None, gpqa_csv: str | None = None,
         console=print) -> list[dict]:
    repo_id = hub.check_repo_id(repo_id)
    run_dirs(root)                      # bad folder: said before the token or network
    tok = hub.token(token)
    hub.check_reachable()
    with tempfile.TemporaryDirectory(prefix="iwsft-push-") as tmp:
        summary = stage(root, Path(tmp), gpqa_csv)
        (Path(tmp) / "README.md").write_text(card_text(repo_id, summary))
        api = hub.api(tok)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="dataset",
                          commit_message=f"iwsft push-results: {len(summary)} run(s)")
    console(f"pushed {len(summary)} evaluation run(s) -> datasets/{repo_id}")
    return summary
