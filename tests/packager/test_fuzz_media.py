"""Mutated real media never crashes, hangs or half-writes the packager.

Hypothesis takes small real files of every input format and truncates them,
flips bits, overwrites spans, prepends junk or gives them the wrong extension.
Each mutant is packaged in its own process with a time limit (as the batch
runs tracks), and must end either packaged and whole, or failed with an error
that names the file. Bounded: ``MAX_EXAMPLES`` mutants per run (seeded by
hypothesis, so a failure replays), a few seconds each at most.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.manifests.ladder import Ladder, Rung
from cadenza.manifests.model import Codec
from cadenza.packager.batch import run_batch
from cadenza.packager.output import is_complete
from cadenza.packager.track import PackageOptions
from cadenza.store.atomic import TMP_PREFIX
from tests.conftest import FORMATS, MakeInput
from tests.packager.test_crash import _assert_whole

MAX_EXAMPLES = 60
TIME_LIMIT_S = 60.0
OPTIONS = PackageOptions(
    ladder=Ladder("fuzz", (Rung(Codec.AAC, 64_000), Rung(Codec.OPUS, 48_000))),
    segment_duration=Fraction(1),
)


@st.composite
def mutations(draw: st.DrawFn, size: int) -> list[tuple[str, int, int]]:
    """Edits as (kind, position, amount); positions are fractions of ``size``."""
    kinds = st.sampled_from(["truncate", "flip", "overwrite", "prepend", "zero"])
    edits = draw(st.lists(st.tuples(kinds, st.integers(0, size - 1), st.integers(1, 4096)),
                          min_size=1, max_size=4))  # fmt: skip
    return edits


def mutate(data: bytes, edits: list[tuple[str, int, int]], seed: int) -> bytes:
    out = bytearray(data)
    for kind, position, amount in edits:
        position = min(position, max(0, len(out) - 1))
        if kind == "truncate":
            del out[position:]
        elif kind == "flip" and out:
            for k in range(min(amount, 64)):
                index = (position + k * 131 + seed) % len(out)
                out[index] ^= 1 << ((seed + k) % 8)
        elif kind == "overwrite":
            span = bytes((seed * 7 + i * 31) % 256 for i in range(min(amount, 512)))
            out[position : position + len(span)] = span
        elif kind == "prepend":
            out[:0] = bytes((seed + i) % 256 for i in range(min(amount, 256)))
        elif kind == "zero":
            out[position : position + amount] = bytes(min(amount, len(out) - position))
    return bytes(out)


@pytest.fixture(scope="module")
def seeds(make_input: MakeInput) -> dict[str, bytes]:
    rates = {"opus": 48000}
    return {k: make_input(k, rates.get(k, 44100), 2, 1.5).read_bytes() for k in FORMATS}


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_media_is_packaged_whole_or_refused_by_name(
    data: st.DataObject, seeds: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory
) -> None:
    kind = data.draw(st.sampled_from(sorted(seeds)), label="format")
    original = seeds[kind]
    edits = data.draw(mutations(len(original)), label="edits")
    seed = data.draw(st.integers(0, 255), label="seed")
    suffix = data.draw(st.sampled_from([FORMATS[kind][0], ".mp3", ".wav", ".bin"]), label="ext")
    work = tmp_path_factory.mktemp("fuzz")
    source = work / f"mutant{suffix}"
    source.write_bytes(mutate(original, edits, seed))
    out = work / "out"
    out.mkdir()
    (result,) = run_batch([source], out, OPTIONS, jobs=1, timeout_s=TIME_LIMIT_S).results
    assert result.status in ("packaged", "failed")
    if result.status == "failed":
        error = result.error or ""
        assert str(source) in error, f"an error must name its file: {error!r}"
        assert "gave up after" not in error, "no mutant may hang the packager"
        assert "process died" not in error, "no mutant may crash the packager"
        assert "Traceback" not in error
        assert not (out / "mutant").exists()
    else:
        assert is_complete(out / "mutant")
        _assert_whole(out / "mutant")
    assert not list(out.glob(f"{TMP_PREFIX}*"))
