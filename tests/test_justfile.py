"""`just test` tells the truth about the real-engine tests: without the vLLM environment it fails at once
with the command that builds it (before the 12-minute main suite), IWSFT_SKIP_VLLM=1 skips them on
purpose and says so, and with an environment `just test-vllm` runs `pytest -m vllm` there with
IWSFT_REQUIRE_VLLM=1. A stand-in `python` in a fake environment records what it is asked (no vLLM)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JUST = shutil.which("just")
pytestmark = pytest.mark.skipif(JUST is None, reason="just is not installed (pip install rust-just; the dev extra has it)")


def _just(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("IWSFT_VLLM_VENV", "IWSFT_SKIP_VLLM")}
    return subprocess.run([JUST, *args], cwd=ROOT, capture_output=True, text=True, env={**clean, **env}, timeout=60)


def _fake_venv(tmp_path: Path, exit_code: int) -> tuple[Path, Path]:
    venv, log = tmp_path / "venv", tmp_path / "calls.txt"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(f'#!/usr/bin/env bash\necho "REQUIRE=$IWSFT_REQUIRE_VLLM $*" >> {log}\nexit {exit_code}\n')
    py.chmod(py.stat().st_mode | stat.S_IEXEC)
    return venv, log


def test_no_vllm_environment_fails_first_with_the_command_that_builds_it(tmp_path):
    r = _just("vllm-env-present", IWSFT_VLLM_VENV=str(tmp_path / "none"))
    assert r.returncode != 0
    assert f"no vLLM environment at {tmp_path / 'none'}" in r.stderr and "'just vllm-env'" in r.stderr
    assert "IWSFT_SKIP_VLLM=1 just test" in r.stderr
    r = _just("test-vllm", IWSFT_VLLM_VENV=str(tmp_path / "none"))
    assert r.returncode != 0 and "'just vllm-env'" in r.stderr
    if not (ROOT / ".venv-vllm").exists():          # the default place too (it once printed "not run", exit 0)
        r = _just("test-vllm")
        assert r.returncode != 0 and "no vLLM environment at .venv-vllm" in r.stderr
    # `just test` asks before the main suite: the check is its first step after setup
    plan = _just("--dry-run", "test", IWSFT_VLLM_VENV=str(tmp_path / "none")).stderr.splitlines()
    steps = [line.strip() for line in plan if line.strip().startswith("just ")]
    assert steps[:2] == ["just vllm-env-present >/dev/null", "just test-main"], plan


def test_skipping_on_purpose_says_so(tmp_path):
    r = _just("test-vllm", IWSFT_VLLM_VENV=str(tmp_path / "none"), IWSFT_SKIP_VLLM="1")
    assert r.returncode == 0 and "vLLM tests skipped on purpose (IWSFT_SKIP_VLLM=1)" in r.stdout
    venv, log = _fake_venv(tmp_path, 0)
    r = _just("test-vllm", IWSFT_VLLM_VENV=str(venv), IWSFT_SKIP_VLLM="1")      # even where one exists
    assert r.returncode == 0 and "skipped on purpose" in r.stdout and not log.exists()


@pytest.mark.parametrize("exit_code,ok", [(0, True), (5, True), (1, False)])   # 5: the selection has no vllm test
def test_vllm_half_runs_pytest_in_the_environment(tmp_path, exit_code, ok):
    venv, log = _fake_venv(tmp_path, exit_code)
    r = _just("test-vllm", "-k", "engine", IWSFT_VLLM_VENV=str(venv))
    assert (r.returncode == 0) == ok, r.stderr
    assert log.read_text().splitlines() == ["REQUIRE=1 -m pytest -q -k engine -m vllm"]
    assert f"vLLM tests ({venv}): exit {exit_code}" in r.stdout
