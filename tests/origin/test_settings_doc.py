"""The settings table of docs/operating.md is generated from the ``Settings`` fields'
metadata, and the old name of the guidance setting (``steering``) is still read."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from cadenza.origin.errors import SettingsError
from cadenza.origin.setting_field import describe
from cadenza.origin.settings import Settings, env_names, load_settings
from cadenza.origin.settings_doc import (
    TABLE_END,
    TABLE_START,
    embed_settings_table,
    main,
    render_settings_table,
)

OPERATING = Path(__file__).resolve().parents[2] / "docs" / "operating.md"
FIELDS = dataclasses.fields(Settings)


class _RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers every name asked of it."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __getitem__(self, key: str) -> str:
        self.asked.append(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_operating_doc_holds_the_generated_table() -> None:
    text = OPERATING.read_text(encoding="utf-8")
    assert TABLE_START in text and TABLE_END in text
    assert embed_settings_table(text) == text, (
        "docs/operating.md's settings table is stale: run "
        "`.venv/bin/python -m cadenza.origin.settings_doc --write docs/operating.md`"
    )


def test_every_setting_is_documented_once_in_order() -> None:
    rows = [line for line in render_settings_table().splitlines() if line.startswith("| ")]
    names = [row.split(" | ")[0].removeprefix("| ") for row in rows[1:]]
    assert names == [f.name for f in FIELDS]
    for item in FIELDS:
        assert describe(item).meaning.strip(), item.name


def test_the_table_names_exactly_the_variables_the_loader_reads() -> None:
    env = _RecordingEnv()
    load_settings({"root": "/srv"}, env=env)
    documented = {name for item in FIELDS for name in env_names(item.name)}
    assert set(env.asked) == documented
    table = render_settings_table()
    for item in FIELDS:
        if not describe(item).toml_only:
            for name in env_names(item.name):
                assert f"`{name}`" in table


def test_secrets_stay_out_of_repr() -> None:
    secret = "s" * 20
    settings = Settings(
        root="/srv",
        signing_keys=(secret,),
        admin_token=secret,
        redis_url=f"redis://:{secret}@h:6379/0",
    )
    assert secret not in repr(settings)
    assert "/srv" in repr(settings)


def test_write_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    document = tmp_path / "operating.md"
    document.write_text(f"# Before\n{TABLE_START}\n| stale |\n{TABLE_END}\nAfter\n", "utf-8")
    assert main(["--write", str(document)]) == 0
    text = document.read_text(encoding="utf-8")
    assert "| stale |" not in text
    assert text == f"# Before\n{TABLE_START}\n{render_settings_table()}{TABLE_END}\nAfter\n"
    assert main(["--write", str(document)]) == 0
    assert document.read_text(encoding="utf-8") == text


def test_write_refuses_a_document_without_markers(tmp_path: Path) -> None:
    document = tmp_path / "plain.md"
    document.write_text("no table here\n", encoding="utf-8")
    assert main(["--write", str(document)]) == 1
    assert document.read_text(encoding="utf-8") == "no table here\n"


# -- guidance, formerly steering -------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, True),
        ({"CADENZA_GUIDANCE": "false"}, False),
        ({"CADENZA_STEERING": "false"}, False),
        ({"CADENZA_GUIDANCE": "true", "CADENZA_STEERING": "false"}, True),
        ({"CADENZA_GUIDANCE": "false", "CADENZA_STEERING": "true"}, False),
    ],
)
def test_guidance_from_either_environment_name(env: dict[str, str], expected: bool) -> None:
    assert load_settings({"root": "/srv"}, env=env).guidance is expected


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("guidance = false\n", False),
        ("steering = false\n", False),
        ("steering = false\nguidance = true\n", True),
        ("guidance = true\nsteering = false\n", True),
        ("guidance = false\nsteering = true\n", False),
        ("[origin]\nsteering = false\n", False),
    ],
)
def test_guidance_from_either_toml_key(tmp_path: Path, toml: str, expected: bool) -> None:
    config = tmp_path / "cadenza.toml"
    config.write_text(toml, encoding="utf-8")
    assert load_settings({"root": "/srv"}, env={}, config_file=config).guidance is expected


def test_the_old_environment_name_still_beats_the_file(tmp_path: Path) -> None:
    """Precedence is by source (environment over file), whichever name each uses."""
    config = tmp_path / "cadenza.toml"
    config.write_text("guidance = true\n", encoding="utf-8")
    env = {"CADENZA_STEERING": "off"}
    assert load_settings({"root": "/srv"}, env=env, config_file=config).guidance is False


def test_a_bad_value_under_the_old_name_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="guidance") as caught:
        load_settings({"root": "/srv"}, env={"CADENZA_STEERING": "maybe"})
    assert caught.value.name == "guidance"
