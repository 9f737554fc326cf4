"""Pushing to the hub, against a recording stand-in for HfApi (the hub is not reachable here): what
goes to which repo and revision, the model card, GPQA text never uploaded, and bad input."""

import json
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.publish import hub

sys.path.insert(0, str(Path(__file__).parent))
from test_trackers import _args  # noqa: E402  (tiny_dir: conftest.py)


@pytest.fixture
def fake_hub(monkeypatch):
    """HfApi's calls recorded; upload_folder keeps the files it would send (huggingface_hub's own
    filter of ignore_patterns), read at call time (the staging folder is temporary)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    import harness.core.hub

    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))

    def create_branch(self, repo_id, *, branch, **kw):
        calls.append(("create_branch", repo_id, {"branch": branch, **kw}))

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, allow_patterns=None, **kw):
        root = Path(folder_path)
        rel = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
        files = {r: (root / r).read_bytes() for r in filter_repo_objects(rel, allow_patterns=allow_patterns,
                                                                          ignore_patterns=ignore_patterns)}
        calls.append(("upload_folder", repo_id, {"folder": str(root), "files": files, **kw}))

    def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, **kw):
        calls.append(("upload_file", repo_id, {"path_in_repo": path_in_repo, "data": path_or_fileobj, **kw}))

    for name, fn in (("create_repo", create_repo), ("create_branch", create_branch), ("upload_folder", upload_folder),
                     ("upload_file", upload_file)):
        monkeypatch.setattr(HfApi, name, fn)
    monkeypatch.setattr(harness.core.hub, "unreachable", lambda: None)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    return calls


@pytest.fixture
def no_token(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)


def test_recipe_push_to_hub_final_to_main_and_chosen_steps_to_branches(tiny_dir, tmp_path, fake_hub):  # noqa: F811
    args = _args(tiny_dir, tmp_path, max_steps=6, save_every=2, keep_checkpoints=1, push_to_hub="org/tiny-iw",
                 push_steps=[2], hub_private=True)
    assert main(["train", "-", *args]) == 0
    run = tmp_path / "run"
    assert (run / "checkpoints" / "step-000002").is_dir()       # kept past keep_checkpoints=1: it is pushed
    kinds = [(c[0], c[2].get("revision") or c[2].get("branch")) for c in fake_hub]
    assert kinds == [("create_repo", None), ("upload_folder", "main"), ("upload_file", "main"),
                     ("create_branch", "step-2"), ("upload_folder", "step-2"), ("upload_file", "step-2")]
    assert all(c[1] == "org/tiny-iw" for c in fake_hub)
    assert fake_hub[0][2]["private"] is True and fake_hub[0][2]["repo_type"] == "model"
    final, step2 = fake_hub[1][2], fake_hub[4][2]
    assert final["folder"] == str(run / "final") and step2["folder"] == str(run / "checkpoints" / "step-000002")
    for up in (final, step2):
        assert {"model.safetensors", "config.json", "tokenizer.json", "iwsft_train.json"} <= set(up["files"])
        assert not [f for f in up["files"] if f.startswith("optimizer/") or f == "trainer_state.pt"]
    assert (run / "checkpoints" / "step-000002" / "trainer_state.pt").is_file()     # there, and left out
    assert final["files"]["model.safetensors"] == (run / "final" / "model.safetensors").read_bytes()
    card = fake_hub[2][2]
    assert card["path_in_repo"] == "README.md"
    text = card["data"].decode()
    assert "`iw-sft`" in text and str(tiny_dir / "data.jsonl") in text and "weighting: iw-sft" in text
    trained_by = json.loads((run / "final" / "iwsft_train.json").read_text())["harness_commit"]
    assert trained_by == hub.harness_commit() != ""          # recorded at training time, in every checkpoint
    assert f"harness git commit (training) | `{trained_by}`" in text and f"(this push) | `{hub.harness_commit()}`" in text
    assert "after 2 optimizer steps" in fake_hub[5][2]["data"].decode() and "the final model" in text


def test_push_command_of_one_checkpoint_and_its_errors(tiny_dir, tmp_path, fake_hub, capsys):  # noqa: F811
    assert main(["train", "-", *_args(tiny_dir, tmp_path, max_steps=4, save_every=2)]) == 0
    run = tmp_path / "run"
    assert main(["push", str(run / "checkpoints" / "step-000002"), "--repo-id", "org/m"]) == 0
    assert [(c[0], c[2].get("revision") or c[2].get("branch")) for c in fake_hub] == [
        ("create_repo", None), ("create_branch", "step-2"), ("upload_folder", "step-2"), ("upload_file", "step-2")]
    fake_hub.clear()
    capsys.readouterr()
    for argv, msg in ((["push", str(run), "--repo-id", "org/m", "--steps", "3"], "no checkpoint of step 3"),
                      (["push", str(run), "--repo-id", "not a repo"], "is not a hub repo id"),
                      (["push", str(run), "--repo-id", "org/m/x"], "is not a hub repo id"),
                      (["push", str(tmp_path / "nothing"), "--repo-id", "org/m"], "is not a folder")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    assert fake_hub == []                                   # nothing uploaded on bad input


def test_no_token_is_one_line_before_training(tiny_dir, tmp_path, fake_hub, no_token, capsys):  # noqa: F811
    assert main(["train", "-", *_args(tiny_dir, tmp_path, push_to_hub="org/m")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no hub token" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists() and fake_hub == []
    assert main(["train", "-", *_args(tiny_dir, tmp_path, push_to_hub="bad/id/x")]) == 2
    assert "push_to_hub 'bad/id/x' is not a hub repo id" in capsys.readouterr().err
    assert main(["train", "-", *_args(tiny_dir, tmp_path, push_steps=[2], save_every=2)]) == 2
    assert "set push_to_hub" in capsys.readouterr().err
    assert main(["train", "-", *_args(tiny_dir, tmp_path, push_to_hub="org/m", push_steps=[3], save_every=2)]) == 2
    assert "multiple of save_every" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ evaluation results


def test_push_results_never_uploads_gpqa_text(tmp_path, monkeypatch, fake_hub, capsys):
    from harness.evaluation import runner as ev
    from harness.evaluation import store
    from test_benchmarks import secret_texts, write_fake_gpqa_csv
    from test_evaluate import FakeEngine

    monkeypatch.setattr(ev, "Engine", FakeEngine)
    monkeypatch.delenv("IWSFT_GPQA_CSV", raising=False)
    csv = write_fake_gpqa_csv(tmp_path / "gpqa.csv")
    out = tmp_path / "evals"
    assert main(["eval", "--model", "fake", "--benchmarks", "aime24,gpqa_diamond", "--limit", "2", "--gpqa-csv", str(csv),
                 "--out", str(out), "--no-progress"]) == 0
    secrets = secret_texts()
    # A samples file as another tool (or an older harness) might have left it: question, prompt and
    # options beside each GPQA row, and the question quoted in the response.
    (gdir,) = (out / "fake" / "gpqa_diamond").iterdir()
    rows = [json.loads(l) for l in (gdir / store.SAMPLES_FILE).read_text().splitlines()]
    for r in rows:
        r.update(question=secrets[0], prompt=f"Question: {secrets[0]}", options=secrets[1:4],
                 response=f"The question says: {secrets[0]} so {r['response']}")
    (gdir / store.SAMPLES_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))

    assert main(["push-results", str(out), "--repo-id", "org/evals", "--gpqa-csv", str(csv)]) == 0
    assert [c[0] for c in fake_hub] == ["create_repo", "upload_folder"]
    assert fake_hub[0][2]["repo_type"] == "dataset" and fake_hub[1][2]["repo_type"] == "dataset"
    files = fake_hub[1][2]["files"]
    (adir,) = (out / "fake" / "aime24").iterdir()
    a_rel, g_rel = f"fake/aime24/{adir.name}", f"fake/gpqa_diamond/{gdir.name}"
    assert {f"{a_rel}/metrics.json", f"{a_rel}/samples.jsonl", f"{a_rel}/settings.json", f"{g_rel}/samples.jsonl",
            "README.md"} <= set(files)
    blob = b"\n".join(files.values()).decode()
    leaked = [s for s in secrets if s in blob]
    assert not leaked, f"{len(leaked)} GPQA texts uploaded"
    g_rows = [json.loads(l) for l in files[f"{g_rel}/samples.jsonl"].decode().splitlines()]
    assert len(g_rows) == 2 and all(not {"question", "prompt", "options"} & set(r) for r in g_rows)
    assert all(store.REDACTED in r["response"] for r in g_rows)
    a_rows = [json.loads(l) for l in files[f"{a_rel}/samples.jsonl"].decode().splitlines()]
    assert a_rows == [r for _, r in sorted(store.read_samples(adir).items())]      # public rows as stored
    assert json.loads(files[f"{a_rel}/metrics.json"]) == json.loads((adir / "metrics.json").read_text())
    assert "| aime24 | 2 |" in files["README.md"].decode()

    # Without the CSV the fields are still dropped (the quoted question in the response can only be
    # redacted with the data at hand, which is why the store redacts when it writes).
    fake_hub.clear()
    assert main(["push-results", str(gdir), "--repo-id", "org/evals"]) == 0
    (g_only,) = [v for k, v in fake_hub[1][2]["files"].items() if k.endswith("samples.jsonl")]
    assert all(not {"question", "prompt", "options"} & set(json.loads(l)) for l in g_only.decode().splitlines())


def test_push_results_bad_input(tmp_path, fake_hub, no_token, capsys):
    assert main(["push-results", str(tmp_path), "--repo-id", "org/e"]) == 2
    assert "no finished evaluation runs" in capsys.readouterr().err
    (tmp_path / "m" / "b" / "h").mkdir(parents=True)
    for f in ("metrics.json", "settings.json"):
        (tmp_path / "m" / "b" / "h" / f).write_text("{}")
    assert main(["push-results", str(tmp_path), "--repo-id", "org/e"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no hub token" in err and len(err.splitlines()) == 1 and fake_hub == []
