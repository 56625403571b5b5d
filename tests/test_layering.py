"""The dependency direction is a design rule: manifests <- packager,
manifests <- origin.  Checked on the source with ``ast`` so it cannot rot."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(package: str) -> list[tuple[Path, str, bool]]:
    """(file, imported top-level module, imported inside a function) for every import."""
    found: list[tuple[Path, str, bool]] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        functions = [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        nested = {id(sub) for fn in functions for sub in ast.walk(fn)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            found.extend((path, name.split(".")[0], id(node) in nested) for name in names)
    return found


@pytest.mark.parametrize("forbidden", ["av", "aiohttp", "aioboto3", "packager", "origin"])
def test_manifests_imports_no_io_or_other_packages(forbidden: str) -> None:
    offenders = [str(p) for p, name, _ in _imports("manifests") if name == forbidden]
    assert offenders == []


@pytest.mark.parametrize("package", ["manifests", "packager"])
def test_nothing_imports_origin(package: str) -> None:
    offenders = [str(p) for p, name, _ in _imports(package) if name == "origin"]
    assert offenders == []


@pytest.mark.parametrize("forbidden", ["av", "packager"])
def test_origin_never_imports_av_or_packager(forbidden: str) -> None:
    offenders = [str(p) for p, name, _ in _imports("origin") if name == forbidden]
    assert offenders == []


def test_packager_does_not_import_aiohttp() -> None:
    offenders = [str(p) for p, name, _ in _imports("packager") if name == "aiohttp"]
    assert offenders == []


def test_cli_dispatches_subcommands_lazily() -> None:
    """``cadenza serve`` must not load PyAV: the dispatcher names modules as strings."""
    cli = ROOT / "origin" / "cli.py"
    top_level = [name for p, name, nested in _imports("origin") if p == cli and not nested]
    assert "packager" not in top_level
    assert "packager.cli" in cli.read_text(encoding="utf-8")
