"""Stereo downmix of a multichannel source, for the stereo rungs a 5.1 source gets.

ITU-R BS.775-3 (Table 2, 3/2 to 2/0): ``L' = L + 0.7071 C + 0.7071 Ls`` and
``R' = R + 0.7071 C + 0.7071 Rs``; the LFE is dropped.  Each output row is then
divided by the sum of its coefficients' magnitudes (2.414 for 5.1, -7.7 dB),
so that no input within full scale can clip the downmix: the normalisation
FFmpeg's resampler leaves out for float output.  The stereo rungs are therefore
quieter than the 5.1 rungs (-7.7 dB for a signal in the front pair alone, less
for one spread over the surrounds): :class:`DownmixMeter` measures the downmixed
signal in the same decode pass as the source, and the stereo renditions carry its
figures as their own loudness (:func:`with_downmix_loudness`), so a player
normalising a stereo rung uses the level of what it plays.

The matrix is built from FFmpeg's channel names, so ``5.1`` (back surrounds) and
``5.1(side)`` mix alike; a name it does not know feeds both sides at -6 dB.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from cadenza.manifests.model import Loudness, Rendition
from cadenza.packager.decode import Block
from cadenza.packager.loudness import LoudnessMeter, channel_weights

STEREO_LAYOUT: Final = "stereo"
_MINUS_3_DB: Final = math.sqrt(0.5)  # 0.7071
# (left, right) gain of each input channel, by FFmpeg channel name.
_GAINS: Final = {
    "FL": (1.0, 0.0),
    "FR": (0.0, 1.0),
    "FC": (_MINUS_3_DB, _MINUS_3_DB),
    "LFE": (0.0, 0.0),
    "LFE2": (0.0, 0.0),
    "BL": (_MINUS_3_DB, 0.0),
    "BR": (0.0, _MINUS_3_DB),
    "SL": (_MINUS_3_DB, 0.0),
    "SR": (0.0, _MINUS_3_DB),
    "FLC": (1.0, 0.0),
    "FRC": (0.0, 1.0),
    "BC": (0.5, 0.5),
    "TC": (0.5, 0.5),
}


def downmix_matrix(channel_names: Sequence[str]) -> npt.NDArray[np.float32]:
    """The (2, channels) BS.775 matrix for these input channels, each row normalised
    to a magnitude sum of 1."""
    rows = np.array([_GAINS.get(name.upper(), (0.5, 0.5)) for name in channel_names]).T
    sums = np.abs(rows).sum(axis=1, keepdims=True)
    sums[sums == 0] = 1.0
    matrix: npt.NDArray[np.float32] = (rows / sums).astype(np.float32)
    return matrix


class StereoDownmix:
    """Planar multichannel blocks in, planar stereo blocks out."""

    layout: Final = STEREO_LAYOUT

    def __init__(self, channel_names: Sequence[str]) -> None:
        self.matrix = downmix_matrix(channel_names)

    def __call__(self, block: Block) -> Block:
        # Multiply-adds rather than a matmul: BLAS would start threads that spin on a
        # core the encoders need (see cadenza.packager.loudness).
        mixed: Block = np.zeros((2, block.shape[1]), dtype=np.float32)
        for channel, (left, right) in enumerate(self.matrix.T):
            if left:
                mixed[0] += left * block[channel]
            if right:
                mixed[1] += right * block[channel]
        return mixed


def is_downmix(channels: int, source_channels: int) -> bool:
    """Whether a rung of ``channels`` is a stereo downmix of a ``source_channels`` source."""
    return channels == 2 < source_channels


class DownmixMeter:
    """Measures the stereo downmix of a multichannel source, block by block: the
    signal every downmix rung encodes (before its codec), metered as stereo."""

    def __init__(self, channel_names: Sequence[str], sample_rate_hz: int) -> None:
        self.downmix = StereoDownmix(channel_names)
        self.meter = LoudnessMeter(sample_rate_hz, channel_weights(("FL", "FR")))

    def __call__(self, block: Block | None) -> None:
        if block is not None:
            self.meter.add(self.downmix(block))


def with_downmix_loudness(
    renditions: Sequence[Rendition], source_channels: int, loudness: Loudness
) -> tuple[Rendition, ...]:
    """``renditions`` with ``loudness`` (a :class:`DownmixMeter`'s result) as the own
    loudness of each stereo downmix among them."""
    return tuple(
        dataclasses.replace(r, loudness=loudness) if is_downmix(r.channels, source_channels) else r
        for r in renditions
    )
