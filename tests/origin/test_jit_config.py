"""The just-in-time settings: read like the origin's (flags, ``CADENZA_JIT_*``, the
``[jit]`` table of the config file, defaults), checked, and documented in
docs/operating.md by a generated table."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from cadenza.manifests.ladder import DEFAULT_PRESET
from cadenza.origin.settings import load_settings
from cadenza.packager.jit.config import (
    FIELDS,
    TABLE_END,
    TABLE_START,
    JitConfigError,
    JitOptions,
    env_name,
    load_jit_options,
    render_jit_table,
)
from cadenza.packager.track import DEFAULT_SEGMENT_DURATION

OPERATING = Path(__file__).resolve().parents[2] / "docs" / "operating.md"


def test_the_documented_table_is_the_generated_one() -> None:
    text = OPERATING.read_text(encoding="utf-8")
    inside = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    assert inside == "\n" + render_jit_table(), (
        "regenerate: python -m cadenza.packager.jit.config --write docs/operating.md"
    )
    for name in FIELDS:
        assert f"`{env_name(name)}`" in inside


def test_defaults_are_the_batch_packagers() -> None:
    options = JitOptions()
    assert not options.enabled
    assert options.jit_ladder == DEFAULT_PRESET
    assert options.jit_segment_duration == DEFAULT_SEGMENT_DURATION
    assert options.jit_workers == 2 and options.jit_negative_ttl_s == 60.0


def test_flags_win_over_the_environment_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "cadenza.toml"
    config.write_text(
        '[origin]\nport = 9000\n[jit]\nsources = "/from/file"\njit_workers = 3\n'
        "jit_negative_ttl_s = 5\njit_queue_max = 4\n"
    )
    env = {"CADENZA_JIT_WORKERS": "5", "CADENZA_JIT_SEGMENT_DURATION": "96/25"}
    options = load_jit_options({"jit_queue_max": "9", "sources": None}, env, config)
    assert options.sources == "/from/file"
    assert options.jit_workers == 5
    assert options.jit_queue_max == 9
    assert options.jit_negative_ttl_s == 5.0
    assert options.jit_segment_duration == Fraction(96, 25)
    # The origin reads the same file's [origin] table, and ignores [jit].
    assert load_settings({"root": "/srv"}, {}, config).port == 9000


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("jit_workers", "0", "positive"),
        ("jit_queue_max", "-1", "positive"),
        ("jit_segment_duration", "0.1", "between"),
        ("jit_writeback", "maybe", "true or false"),
        ("jit_negative_ttl_s", "soon", "expected float"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: str, reason: str) -> None:
    with pytest.raises(JitConfigError, match=f"{name}.*{reason}"):
        load_jit_options({name: value}, {})


def test_an_unknown_key_of_the_jit_table_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "cadenza.toml"
    config.write_text("[jit]\njit_wokers = 3\n")
    with pytest.raises(JitConfigError, match="jit_wokers"):
        load_jit_options({}, {}, config)
