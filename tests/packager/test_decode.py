"""Decoded frames are joined into larger blocks before they fan out to the encoders."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.packager.decode import Decoder, coalesce
from tests.conftest import MakeInput


@pytest.mark.parametrize("min_ticks", [1, 3000, 16384, 10**9])
def test_coalesced_blocks_hold_every_sample_in_order(make_input: MakeInput, min_ticks: int) -> None:
    source = make_input("mp3", 44100, 2, 2.0)  # 1152-sample frames: many joins per block
    with Decoder(source) as decoder:
        frames = [np.asarray(f.to_ndarray(), dtype=np.float32) for f in decoder.frames()]
    with Decoder(source) as decoder:
        blocks = list(coalesce(decoder.frames(), min_ticks))
    assert np.array_equal(np.concatenate(blocks, axis=1), np.concatenate(frames, axis=1))
    assert all(b.shape[1] >= min_ticks for b in blocks[:-1])
    assert all(b.dtype == np.float32 and not b.flags.writeable for b in blocks)
