"""Running the ``mailtoaster`` command in the test process, and what a usage error must look like."""

from __future__ import annotations

import pytest

from mailtoaster.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit code, standard output, standard error) of ``mailtoaster ARGV...``."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code: int, out: str, err: str, fragment: str) -> None:
    """Exit 2, nothing on standard output, one line on standard error naming ``fragment``."""
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert fragment in err
