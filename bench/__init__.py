"""Benchmarks against peers (ffmpeg, Shaka Packager, nginx), run by ``make bench``."""
