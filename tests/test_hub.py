"""harness.core.hub: a repo neither cached nor reachable is refused in seconds; a cached one is left to
the libraries (they load it offline)."""

import pytest

from harness.core import hub
from harness.cli import main


def test_unavailable_unless_cached(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "ds"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "offline mode" in hub.unavailable("org/model")
    (tmp_path / "hub" / "models--org--model").mkdir(parents=True)
    (tmp_path / "ds" / "org___data").mkdir(parents=True)
    assert hub.unavailable("org/model") is None and hub.unavailable("org/data", "dataset") is None
    assert hub.unavailable("org/other", "dataset")


def test_proxy_and_refused_connection(monkeypatch):
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert "ConnectionRefusedError" in hub.unreachable()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert hub.unreachable() is None              # a proxy may reach what a direct connection cannot


@pytest.mark.parametrize("args, needle", [
    (["train", "-", "model=smollm2-135m", "dataset=nobody/no-such-dataset", "output_dir={tmp}/o"], "dataset 'nobody/no-such-dataset'"),
    (["eval", "--model", "nobody/no-such-model", "--benchmarks", "arith", "--limit", "1", "--no-progress", "--out", "{tmp}/e"],
     "model 'nobody/no-such-model'"),
])
def test_hub_ids_offline_are_one_line(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "offline mode" in err
