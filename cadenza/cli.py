"""The ``cadenza`` command: one entry point, one subcommand per job.

Each subcommand lives with the package that owns it and exposes
``add_arguments(parser)`` and ``run(args) -> int``.  They are imported only
when chosen, so ``cadenza serve`` never loads PyAV and ``cadenza package``
never loads aiohttp.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "package": (
        "cadenza.packager.cli",
        "package tracks into an AAC/Opus/FLAC ladder with HLS and DASH",
    ),
    "segment": (
        "cadenza.packager.segment_cli",
        "segment pre-encoded rungs into CMAF, HLS and DASH",
    ),
    "live": (
        "cadenza.packager.live.cli",
        "package a live input as it arrives (LL-HLS and LL-DASH, about a second of latency)",
    ),
    "gc": (
        "cadenza.packager.gc",
        "remove republished tracks' earlier files once their grace period is over",
    ),
    "serve": (
        "cadenza.serve_command",
        "serve packaged tracks (and, with --sources, source files just in time) over HTTP",
    ),
    "abr": ("cadenza.abr_command", "simulate ABR policies over throughput traces"),
    "ladder": ("cadenza.ladder_command", "recommend a bitrate ladder for an audience"),
    "sign": ("cadenza.origin.sign_command", "print a signed URL for a track (signing_keys)"),
    "keys": ("cadenza.keys_command", "rotate the key-encryption key of the content key store"),
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(SUBCOMMANDS[name][0])


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    from cadenza.version import version  # the dispatcher imports no project module up front

    parser = argparse.ArgumentParser(prog="cadenza", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cadenza {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = _load(name)
            module.add_arguments(sub_parser)
            # A command that reads a config file makes its values the defaults here,
            # before parsing, so that flags on the command line override them.
            apply_config = getattr(module, "apply_config_defaults", None)
            if apply_config is not None:
                apply_config(sub_parser, argv)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if next((a for a in args_list if not a.startswith("-")), None) == "package":
        # Packaging uses no BLAS (the loudness meter avoids it on purpose), and an
        # idle OpenBLAS pool thread would stop the batch from forking its track
        # processes directly (packager.processes._single_threaded). Set before numpy loads.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    result: int = _load(args.command).run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
