"""``make bench``: every benchmark, side by side with its peer, into
``bench/results.json`` and ``bench/results.md`` (which the README embeds).

Environment: ``BENCH_RUNS`` (default 5) repetitions per figure,
``BENCH_LONG_S`` (default 360) seconds of the long-track row, ``BENCH_ONLY``
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
from typing import Any

from bench import http_bench, package_bench

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


SUITES = ("package", "http")


def _row_line(row: dict[str, Any]) -> str:
    met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
    cadenza, peer = float(row["cadenza"]), float(row["peer_value"])
    return (
        f"| {row['work']} | {row['peer']} | {row['metric']} | {_fmt(cadenza)} | "
        f"{_fmt(peer)} | {float(row['ratio']):.2f}x | {row['goal']} | {met} | {row['runs']} |"
    )


def _minutes(elapsed_s: float | None) -> str:
    return "duration not recorded" if elapsed_s is None else f"{elapsed_s / 60:.1f} min"


def render_markdown(results: dict[str, Any]) -> str:
    """The README table: every suite's rows under the date and duration of its run."""
    suites: dict[str, dict[str, Any]] = results["suites"]
    runs = "; ".join(
        f"{name} rows {suite['date']} ({_minutes(suite.get('elapsed_s'))}, "
        f"commit {suite['commit']})"
        for name, suite in suites.items()
    )
    lines = [
        f"Measured on {results['machine']} by `{COMMAND}`: {runs}. Medians of the runs "
        "shown, cadenza and its peer alternating; ratio = cadenza / peer.",
        "",
        "| work | peer | metric | cadenza | peer | ratio | goal | met | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in SUITES:
        for row in suites.get(name, {}).get("rows", []):
            lines.append(_row_line(row))
    return "\n".join(lines) + "\n"


def _previous(path: Path) -> dict[str, dict[str, Any]]:
    """Suites of the last run, so a ``BENCH_ONLY`` run replaces only its own half."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    suites = data.get("suites")
    return suites if isinstance(suites, dict) else {}


def main() -> int:
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    long_s = float(os.environ.get("BENCH_LONG_S", "360"))
    only = os.environ.get("BENCH_ONLY")
    if only not in (None, *SUITES):
        print(f"BENCH_ONLY must be one of {', '.join(SUITES)}", file=sys.stderr)
        return 2
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    suites = _previous(HERE / "results.json")
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as tmp:
        work = Path(tmp)
        for name in SUITES:
            if only not in (None, name):
                continue
            started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
            clock = time.perf_counter()
            if name == "package":
                rows = package_bench.run(work / name, runs=runs, long_duration_s=long_s)
            else:
                rows = http_bench.run(work / name, runs=runs, duration_s=5.0)
            for row in rows:
                print(f"{row.work} | {row.metric}: {row.ratio:.2f}x", file=sys.stderr)
            suites[name] = {
                "date": started,
                "commit": commit,
                "elapsed_s": round(time.perf_counter() - clock, 1),
                "rows": [row.to_dict() for row in rows],
            }
    results: dict[str, Any] = {"machine": _machine(), "command": COMMAND, "suites": suites}
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = render_markdown(results)
    (HERE / "results.md").write_text(table, encoding="utf-8")
    embed_in_readme(HERE.parent / "README.md", table)
    print(table)
    return 0


README_START = "<!-- bench:start (written by make bench) -->"
README_END = "<!-- bench:end -->"


def embed_in_readme(readme: Path, table: str) -> None:
    """Replace the table between the README's markers with the latest results."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        print(f"{readme}: no bench markers; table not embedded", file=sys.stderr)
        return
    text = text[: start + len(README_START)] + "\n" + table + text[end:]
    readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
