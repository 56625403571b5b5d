"""The wheel build's one addition to pyproject.toml: the demo page's player libraries.

When the build runs in a checkout where ``npm ci`` installed the players pinned in
package.json / package-lock.json (``make node-deps``; the image's ``players`` stage), the
files origin/static/players.json names are copied into the wheel's
``cadenza/origin/static/players/`` with their licences, so that ``cadenza serve`` from a
``pip install`` or the image serves the demo page whole.  Without them the wheel is built
all the same, and the page says what is missing (origin/player.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
MANIFEST = ROOT / "origin" / "static" / "players.json"
NODE_MODULES = ROOT / "node_modules"


class BuildPyWithPlayers(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "cadenza" / "origin" / "static" / "players"
        # build/ outlives a build: never ship the players of an earlier one.
        shutil.rmtree(target, ignore_errors=True)
        copied: list[str] = []
        for name, entry in json.loads(MANIFEST.read_text(encoding="utf-8")).items():
            package = NODE_MODULES / entry["package"]
            source = package / entry["file"]
            if not source.is_file():
                print(f"setup.py: {source} is missing: the wheel has no {name} (run `npm ci`)")
                continue
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / name)
            shutil.copyfile(package / entry["license"], target / f"{entry['package']}.LICENSE")
            copied.append(name)
        if copied:
            print(f"setup.py: player libraries in the wheel: {', '.join(copied)}")


setup(cmdclass={"build_py": BuildPyWithPlayers})
