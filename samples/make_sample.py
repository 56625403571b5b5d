"""Make the bundled sample track: a few seconds of synthesised music.

Run: ``python samples/make_sample.py samples/sample.flac`` (``make sample``).
The tests use :func:`synthesize` and :func:`write_audio` to make inputs at
other rates, channel counts and formats.  Deterministic: same bytes each run.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream

LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}
# A I-V-vi-IV progression in A major (Hz of each chord's notes).
CHORDS = (
    (220.0, 277.18, 329.63),
    (329.63, 415.30, 493.88),
    (369.99, 440.0, 554.37),
    (293.66, 369.99, 440.0),
)


def synthesize(
    duration_s: float, rate_hz: int, channels: int = 2, seed: int = 7
) -> npt.NDArray[np.float32]:
    """Plucked chords with harmonics, a bass line and a little noise, shape (channels, n).

    Peak stays below -1 dBFS so that lossy encoders do not clip."""
    n = round(duration_s * rate_hz)
    t = np.arange(n, dtype=np.float64) / rate_hz
    rng = np.random.default_rng(seed)
    chord_len = 1.0
    mono = np.zeros(n)
    for index in range(int(np.ceil(duration_s / chord_len))):
        start = int(index * chord_len * rate_hz)
        stop = min(n, int((index + 1) * chord_len * rate_hz))
        if start >= n:
            break
        local = t[start:stop] - t[start]
        env = np.exp(-3.0 * local) * (1 - np.exp(-200.0 * local))
        for freq in CHORDS[index % len(CHORDS)]:
            for harmonic, gain in ((1, 1.0), (2, 0.4), (3, 0.2), (5, 0.05)):
                if freq * harmonic < rate_hz / 2:
                    mono[start:stop] += gain * env * np.sin(2 * np.pi * freq * harmonic * local)
        mono[start:stop] += (
            0.8 * env * np.sin(2 * np.pi * CHORDS[index % len(CHORDS)][0] / 2 * local)
        )
    mono += 0.001 * rng.standard_normal(n)
    mono *= 0.8 / max(1e-9, float(np.max(np.abs(mono))))
    out = np.empty((channels, n), dtype=np.float32)
    for ch in range(channels):
        pan = 0.6 + 0.4 * np.cos(2 * np.pi * 0.25 * t + ch)  # slow movement between speakers
        out[ch] = (mono * pan * 0.9).astype(np.float32)
    return out


def write_audio(
    path: Path,
    samples: npt.NDArray[np.float32],
    rate_hz: int,
    *,
    codec: str = "flac",
    sample_format: str = "s16",
    container: str | None = None,
    bit_rate: int | None = None,
) -> None:
    """Encode planar float samples to ``path`` with PyAV (any codec/container FFmpeg writes)."""
    channels = samples.shape[0]
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate_hz)
        assert isinstance(stream, AudioStream)
        stream.layout = LAYOUTS[channels]
        stream.format = sample_format
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        stream.time_base = Fraction(1, rate_hz)
        block = 4096
        for offset in range(0, samples.shape[1], block):
            chunk = np.ascontiguousarray(samples[:, offset : offset + block])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=LAYOUTS[channels])
            frame.sample_rate = rate_hz
            frame.pts = offset
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "output", type=Path, nargs="?", default=Path(__file__).with_name("sample.flac")
    )
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rate", type=int, default=44100)
    args = parser.parse_args()
    write_audio(args.output, synthesize(args.duration, args.rate), args.rate)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
