"""The dependency direction is a design rule, checked on the source with ``ast`` so it
cannot rot:

- ``manifests`` <- ``abr``: ``abr`` is pure (``manifests``, numpy and the standard
  library only, and no module of the standard library that does I/O or reads a clock:
  every input, the time included, is an argument);
- ``manifests`` <- ``store`` <- {``packager``, ``origin``};
- nothing imports ``origin``; ``packager`` and ``origin`` never import each other.

Every folder installs under the one import package ``cadenza`` (``cadenza/<part>`` is a
symlink to ``<part>/``), so an import of a project module is spelled ``cadenza.<part>``; the
second component names the part.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("manifests", "abr", "store", "packager", "origin")
# What each part may import from the project (besides itself).
ALLOWED: dict[str, set[str]] = {
    "manifests": set(),
    "abr": {"manifests"},
    "store": {"manifests"},
    "packager": {"manifests", "store", "abr"},
    "origin": {"manifests", "store", "abr"},
}
# Third-party distributions each part may import.
THIRD_PARTY: dict[str, set[str]] = {
    "manifests": {"lxml"},
    "abr": {"numpy"},
    # cryptography: the well-kept AES implementation (key wrap for the key store).
    "store": {"aioboto3", "botocore", "boto3", "cryptography"},
    # cryptography: AES-CBC for the packager's CENC cbcs and HLS AES-128 encryption.
    "packager": {
        "av",
        "numpy",
        "botocore",
        "boto3",
        "aioboto3",
        "dask",
        "distributed",
        "cryptography",
    },
    "origin": {
        "aiohttp",
        "multidict",
        "yarl",
        "httptools",
        "numpy",
        "prometheus_client",
        "cachetools",
        "redis",
        "botocore",
        "aioboto3",
    },
}
# Standard-library modules that do I/O or read a clock: ``abr`` takes all of that as
# arguments instead.
IMPURE_STDLIB = {
    "asyncio",
    "glob",
    "http",
    "io",
    "os",
    "pathlib",
    "shutil",
    "socket",
    "subprocess",
    "tempfile",
    "threading",
    "time",
    "urllib",
}


def _imports(part: str) -> list[tuple[Path, str, bool]]:
    """(file, imported module, imported inside a function) for every absolute import."""
    found: list[tuple[Path, str, bool]] = []
    for path in sorted((ROOT / part).rglob("*.py")):
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
            found.extend((path, name, id(node) in nested) for name in names)
    return found


def _project_part(module: str) -> str | None:
    pieces = module.split(".")
    if pieces[0] != "cadenza":
        return None
    return pieces[1] if len(pieces) > 1 else ""


@pytest.mark.parametrize("part", PARTS)
def test_each_part_imports_only_the_parts_below_it(part: str) -> None:
    offenders = [
        f"{p.relative_to(ROOT)}: {name}"
        for p, name, _ in _imports(part)
        if (other := _project_part(name)) is not None
        and other != part
        and other not in ALLOWED[part]
    ]
    assert offenders == []


@pytest.mark.parametrize("part", PARTS)
def test_no_part_imports_the_old_top_level_names(part: str) -> None:
    """``origin``, ``packager`` and ``manifests`` are not importable top-level names once
    installed; an import spelled that way works only from a checkout."""
    offenders = [
        f"{p.relative_to(ROOT)}: {name}"
        for p, name, _ in _imports(part)
        if name.split(".")[0] in PARTS
    ]
    assert offenders == []


@pytest.mark.parametrize("part", PARTS)
def test_each_part_imports_only_its_third_party_libraries(part: str) -> None:
    stdlib = sys.stdlib_module_names
    offenders = [
        f"{p.relative_to(ROOT)}: {name}"
        for p, name, _ in _imports(part)
        if (top := name.split(".")[0]) not in stdlib
        and top != "cadenza"
        and top not in THIRD_PARTY[part]
    ]
    assert offenders == []


# Pure submodules of an impure package: string functions, no I/O.
PURE_STDLIB_SUBMODULES = {"urllib.parse"}


def test_abr_does_no_io_and_reads_no_clock() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}: {name}"
        for p, name, _ in _imports("abr")
        if name.split(".")[0] in IMPURE_STDLIB and name not in PURE_STDLIB_SUBMODULES
    ]
    assert offenders == []


def test_every_part_is_installed_under_cadenza() -> None:
    """``cadenza/<part>`` is a relative symlink to the top-level folder ``<part>/``: the
    one spelling (``cadenza.origin``) for pip, wheels, mypy and pytest alike."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == [
        "cadenza",
        "cadenza.*",
    ]
    for part in PARTS:
        link = ROOT / "cadenza" / part
        assert link.is_symlink(), part
        assert link.readlink() == Path("..") / part
        assert (link / "__init__.py").is_file(), part


def test_cli_dispatches_subcommands_lazily() -> None:
    """``cadenza serve`` must not load PyAV: the dispatcher names modules as strings."""
    cli = ROOT / "cadenza" / "cli.py"
    top_level = [name for p, name, nested in _imports("cadenza") if p == cli and not nested]
    assert all(_project_part(name) in {None, ""} for name in top_level), top_level
    assert "cadenza.packager.cli" in cli.read_text(encoding="utf-8")
