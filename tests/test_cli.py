"""The entry point: `iwsft --help` and every sub-command's --help render (argparse %-formats help)."""

import pytest

from harness.cli import _command_modules, main


@pytest.mark.parametrize("argv", [["--help"]] + [[name.replace("_", "-"), "--help"] for name, _ in _command_modules()])
def test_help_renders(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: iwsft" in capsys.readouterr().out


def test_train_overrides_may_follow_flags(capsys):
    recipe = "recipes/tiny/iw-sft.yaml"
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert main(["train", str(root / recipe), "--check", "max_steps=1"]) == 0
    assert "max_steps: 1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["train", str(root / recipe), "--check", "max_steps=1", "--bogus"])
    assert e.value.code == 2


def test_train_check_refuses_a_model_that_resolves_to_nothing(capsys):
    """--check refuses what the real run refuses: a model path that does not exist."""
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes/tiny/iw-sft.yaml"
    assert main(["train", str(recipe), "--check", "model=/no/such/model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model '/no/such/model' resolves to nothing" in err, err


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_is_exit_130_even_when_a_library_wraps_it(monkeypatch, capsys, sig):
    """torch.distributed.checkpoint wraps a KeyboardInterrupt raised during a save in its own
    exception; SIGTERM (kill, Slurm) counts as an interrupt too."""
    import os
    import signal
    import time

    import harness.commands.toy as toy

    def run(args):
        try:
            os.kill(os.getpid(), getattr(signal, sig))
            time.sleep(5)
        except KeyboardInterrupt as e:
            raise RuntimeError("a library's wrapper") from e

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(toy, "run", run)
    assert main(["toy"]) == 130
    assert "interrupted; finished work is kept" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before          # handlers put back


def test_a_real_error_is_not_called_an_interrupt(monkeypatch):
    import harness.commands.toy as toy

    monkeypatch.setattr(toy, "run", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["toy"])
