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
