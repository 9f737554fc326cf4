"""The entry point: `iwsft --help` and every sub-command's --help render (argparse %-formats help)."""

import pytest

from harness.cli import _command_modules, main


@pytest.mark.parametrize("argv", [["--help"]] + [[name.replace("_", "-"), "--help"] for name, _ in _command_modules()])
def test_help_renders(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: iwsft" in capsys.readouterr().out
