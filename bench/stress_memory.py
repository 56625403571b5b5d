"""``make stress-memory``: peak RSS of packaging a 3-hour track against a 3-minute one.

The packager streams (decode once, bounded queues, segments written as they
fill), so its peak memory must not grow with duration. This packages a 180 s
track and a long one (``STRESS_LONG_S``, default 10800 s = 3 hours; ~25 minutes
here) with the full default ladder and reports both peaks from ``wait4``, into
``bench/stress-memory.json``. Too long for CI; the bench row "10-minute track"
checks the same property in every ``make bench``.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

from bench.common import clean, run_process
from bench.package_bench import cadenza_path, make_track

HERE = Path(__file__).resolve().parent
ALLOWED_GROWTH = 1.15  # the long track's peak may exceed the short one's by 15 %


def main() -> int:
    long_s = float(os.environ.get("STRESS_LONG_S", "10800"))
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="cadenza-stress-") as tmp:
        work = Path(tmp)
        for label, seconds in (("short", 180.0), ("long", long_s)):
            source = make_track(work / "in" / f"track-{seconds:g}s.flac", seconds)
            out = work / f"out-{label}"
            run = run_process([cadenza_path(), "package", str(source), "--out", str(out)])
            clean(out)
            figures[f"{label}_s"] = seconds
            figures[f"{label}_wall_s"] = round(run.wall_s, 1)
            figures[f"{label}_cpu_s"] = round(run.cpu_s, 1)
            figures[f"{label}_peak_rss_mib"] = round(run.peak_rss_mib, 1)
            print(f"{seconds:g} s track: {run.wall_s:.1f} s wall, peak RSS "
                  f"{run.peak_rss_mib:.1f} MiB", file=sys.stderr)  # fmt: skip
    bounded = figures["long_peak_rss_mib"] <= figures["short_peak_rss_mib"] * ALLOWED_GROWTH
    result = {"date": started, **figures, "bounded": bounded}
    (HERE / "stress-memory.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if bounded else 1


if __name__ == "__main__":
    sys.exit(main())
