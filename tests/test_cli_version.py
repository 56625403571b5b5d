"""``cadenza --version`` and the licence the distribution declares."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import metadata
from pathlib import Path

import pytest

from cadenza.cli import main
from cadenza.version import version

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict[str, object]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert isinstance(project, dict)
    return project


def test_version_is_the_one_pyproject_declares() -> None:
    assert version() == _pyproject()["version"]


def test_cadenza_version_prints_it_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"cadenza {version()}\n"


def test_the_installed_command_prints_the_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cadenza", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == f"cadenza {version()}"


def test_licence_file_is_the_apache_2_text_pyproject_names() -> None:
    assert _pyproject()["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License\n                           Version 2.0")
    # The whole text, not a stub: its nine sections and the appendix.
    for heading in (
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        "1. Definitions.",
        "2. Grant of Copyright License.",
        "3. Grant of Patent License.",
        "4. Redistribution.",
        "5. Submission of Contributions.",
        "6. Trademarks.",
        "7. Disclaimer of Warranty.",
        "8. Limitation of Liability.",
        "9. Accepting Warranty or Additional Liability.",
        "END OF TERMS AND CONDITIONS",
        "APPENDIX: How to apply the Apache License to your work.",
    ):
        assert heading in text
    assert len(text.splitlines()) > 190


def test_installed_metadata_names_the_licence_file() -> None:
    """pyproject names the licence as an SPDX expression (PEP 639; the table form
    is deprecated in setuptools, unsupported after 2027-02-18) and LICENSE as its
    file; the installed metadata says both."""
    meta = metadata("cadenza")
    assert "LICENSE" in (meta.get_all("License-File") or [])
    assert meta["License-Expression"] == "Apache-2.0"
