"""The demo page that ``cadenza serve`` shows at ``/``, driven like a user would.

Regenerate the README screenshot with:
    CADENZA_UPDATE_SCREENSHOT=1 .venv/bin/pytest tests/e2e/test_demo.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Drive

pytestmark = pytest.mark.e2e
SCREENSHOT = ROOT / "docs" / "player.png"


def test_demo_page_plays_a_track_and_shows_live_figures(
    drive: Drive, origin_url: str, tmp_path: Path
) -> None:
    shot = tmp_path / "player.png"
    result = drive(
        page=f"{origin_url}/",
        demo={"select": {"#player": "hls", "#codec": "aac"}},
        screenshot=str(shot),
        timeout_s=30,
    )
    demo = result["demo"]
    assert demo["tracks"] == ["e2e-track"]
    assert demo["url"] == "/e2e-track/master.m3u8?codec=aac"
    assert demo["rendition"].endswith("kb/s")
    assert demo["switch_rows"] >= 1
    assert shot.stat().st_size > 10_000
    if os.environ.get("CADENZA_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
