"""``make bench``: every benchmark, side by side with its peer, into
``bench/results.json`` and ``bench/results.md`` (which the README embeds).

Environment: ``BENCH_RUNS`` (default 5) repetitions per figure,
``BENCH_LONG_S`` (default 600) seconds of the long-track row, ``BENCH_ONLY``
(``package`` or ``http``) to run one half.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import http_bench, package_bench
from bench.common import Row

HERE = Path(__file__).resolve().parent
COMMAND = "make bench"


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


def render_markdown(rows: list[Row], started: str, elapsed_s: float) -> str:
    lines = [
        f"Measured {started} on {_machine()} by `{COMMAND}` in {elapsed_s / 60:.1f} min. "
        "Medians of the runs shown, cadenza and its peer alternating; ratio = cadenza / peer.",
        "",
        "| work | peer | metric | cadenza | peer | ratio | goal | met | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "n/a"}[row.met]
        lines.append(
            f"| {row.work} | {row.peer} | {row.metric} | {_fmt(row.cadenza)} | "
            f"{_fmt(row.peer_value)} | {row.ratio:.2f}x | {row.goal} | {met} | {row.runs} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    long_s = float(os.environ.get("BENCH_LONG_S", "600"))
    only = os.environ.get("BENCH_ONLY")
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    clock = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as tmp:
        work = Path(tmp)
        if only in (None, "package"):
            rows += package_bench.run(work / "package", runs=runs, long_duration_s=long_s)
            for row in rows:
                print(f"{row.work} | {row.metric}: {row.ratio:.2f}x", file=sys.stderr)
        if only in (None, "http"):
            rows += http_bench.run(work / "http", runs=runs, duration_s=6.0)
    elapsed_s = time.perf_counter() - clock
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    (HERE / "results.json").write_text(
        json.dumps(
            {
                "date": started,
                "machine": _machine(),
                "command": COMMAND,
                "commit": commit,
                "elapsed_s": round(elapsed_s, 1),
                "rows": [row.to_dict() for row in rows],
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    table = render_markdown(rows, started, elapsed_s)
    (HERE / "results.md").write_text(table, encoding="utf-8")
    if only is None:
        embed_in_readme(HERE.parent / "README.md", table)
    print(table)
    return 0


README_START = "<!-- bench:start (written by make bench) -->"
README_END = "<!-- bench:end -->"


def embed_in_readme(readme: Path, table: str) -> None:
    """Replace the table between the README's markers with this run's (a full run only)."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        print(f"{readme}: no bench markers; table not embedded", file=sys.stderr)
        return
    text = text[: start + len(README_START)] + "\n" + table + text[end:]
    readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
