"""A/B of two builds of the origin in one run: this checkout's ``cadenza serve`` against a
baseline build's, on the same package folder, with nginx as the fixed yardstick.

A refactor of the request path must not cost throughput; machines here are shared and move
by 10-20 % between runs, so the two builds are measured alternately in one run (the rotating
order of :func:`bench.http_bench.measure`) rather than against an older table.  The
baseline is any installed ``cadenza`` command, e.g. an older commit in its own venv::

    git worktree add /tmp/cadenza-base <commit>
    python3 -m venv /tmp/base-venv && /tmp/base-venv/bin/pip install -e /tmp/cadenza-base
    .venv/bin/python -m bench.ab_origin --baseline /tmp/base-venv/bin/cadenza

Rows (1 worker, wrk -t2 -c64): the hot 64 KB segment, the same with a player's CMCD query,
the per-session master (``?sid=``) and the static master.  Prints a Markdown table and writes
``bench/ab-origin.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from urllib.parse import quote

from bench.http_bench import (
    SESSION_SID,
    _cmcd_query,
    cadenza_server,
    expect_ok,
    log,
    measure,
    nginx_server,
    package_track,
    warm,
)

OUT = Path(__file__).resolve().parent / "ab-origin.json"


def _urls(base: str, track: str, segment_path: str) -> dict[str, str]:
    master = f"{base}/{track}/master.m3u8"
    return {
        "64 KB segment": base + segment_path,
        "64 KB segment + CMCD": f"{base}{segment_path}?{_cmcd_query(track)}",
        "master ?sid=": f"{master}?sid={SESSION_SID}",
        "static master": master,
    }


def _prime(base: str, track: str, urls: dict[str, str]) -> None:
    """Create the bench session (its master is then guided) and load every object."""
    create = f"{base}/{track}/aac-128k/seg-00001.m4s?CMCD=" + quote(
        f'sid="{SESSION_SID}",mtp=2000,br=128,ot=a,d=4000', safe=""
    )
    expect_ok(create, header="CMSD-Static")
    for url in urls.values():
        expect_ok(url)


def run(baseline: Path, runs: int, duration_s: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="cadenza-ab-") as tmp:
        work = Path(tmp)
        package = package_track(work)
        segment_path = package.path_of(package.aac_segment)
        with (
            cadenza_server(package.root, 1, work) as new,
            cadenza_server(package.root, 1, work, binary=baseline) as old,
            nginx_server(package.root, 1, work) as nginx,
        ):
            new_urls = _urls(new, package.track, segment_path)
            old_urls = _urls(old, package.track, segment_path)
            _prime(new, package.track, new_urls)
            _prime(old, package.track, old_urls)
            nginx_url = nginx + segment_path
            expect_ok(nginx_url)
            warm([*new_urls.values(), *old_urls.values(), nginx_url])
            pairs = [(f"new {k}", u) for k, u in new_urls.items()]
            pairs += [(f"base {k}", u) for k, u in old_urls.items()]
            pairs.append(("nginx 64 KB segment", nginx_url))
            series = {s.label: s for s in measure(pairs, runs, duration_s)}
    nginx_rps = series["nginx 64 KB segment"].rps
    rows = []
    for name in new_urls:
        ours, base = series[f"new {name}"], series[f"base {name}"]
        rows.append(
            {
                "work": name,
                "new_rps": round(ours.rps, 1),
                "base_rps": round(base.rps, 1),
                "new_over_base": round(ours.rps / base.rps, 3) if base.rps else 0.0,
                "new_p99_ms": round(ours.p99_ms, 2),
                "base_p99_ms": round(base.p99_ms, 2),
                "new_over_nginx": round(ours.rps / nginx_rps, 3) if nginx_rps else 0.0,
                "base_over_nginx": round(base.rps / nginx_rps, 3) if nginx_rps else 0.0,
                "new_runs": ours.summary()["rps_runs"],
                "base_runs": base.summary()["rps_runs"],
            }
        )
    return {
        "baseline": str(baseline),
        "runs": runs,
        "duration_s": duration_s,
        "nginx_rps": round(nginx_rps, 1),
        "rows": rows,
    }


def markdown(result: dict[str, object]) -> str:
    lines = [
        "| work (1 worker, wrk -c64) | new req/s | base req/s | new/base | new p99 ms "
        "| base p99 ms | new/nginx | base/nginx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = result["rows"]
    assert isinstance(rows, list)
    for row in rows:
        lines.append(
            f"| {row['work']} | {row['new_rps']:.0f} | {row['base_rps']:.0f} "
            f"| {row['new_over_base']:.2f}x | {row['new_p99_ms']:.2f} | {row['base_p99_ms']:.2f} "
            f"| {row['new_over_nginx']:.2f}x | {row['base_over_nginx']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the baseline `cadenza`")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration-s", type=float, default=5.0)
    args = parser.parse_args()
    result = run(args.baseline, args.runs, args.duration_s)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {OUT}")
    print(markdown(result))


if __name__ == "__main__":
    main()
