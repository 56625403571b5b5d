"""Write the seeded synthetic trace sets the ABR simulator is evaluated on.

Run: ``.venv/bin/python samples/traces/make_synthetic.py`` (from the repository root).
Writes ``samples/traces/synthetic/<scenario>/<scenario>_<i>`` (``i`` = 1..5), each
600 s of ``time_s throughput_Mbps`` lines, and a ``scenario.toml`` per scenario
with its mean, RTT, loss and seeds; :func:`cadenza.abr_io.read_trace` reads
the RTT from that file.  Deterministic: same bytes each run.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cadenza.abr.traces import format_trace, synthesize_trace

TRACES_PER_SCENARIO: Final = 5
DURATION_S: Final = 600.0
BASE_SEED: Final = 20240601


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    mean_kbps: float
    rtt_ms: float
    loss: float
    seed_offset: int


SCENARIOS: Final = (
    Scenario("3g", mean_kbps=200.0, rtt_ms=50.0, loss=0.01, seed_offset=100),
    Scenario("wifi", mean_kbps=1000.0, rtt_ms=20.0, loss=0.001, seed_offset=200),
    Scenario("fibre", mean_kbps=5000.0, rtt_ms=5.0, loss=0.0001, seed_offset=300),
    Scenario("satellite", mean_kbps=100.0, rtt_ms=200.0, loss=0.05, seed_offset=400),
)


def scenario_toml(scenario: Scenario, seeds: list[int]) -> str:
    """The ``scenario.toml`` that sits beside a scenario's traces."""
    return (
        "# Written by samples/traces/make_synthetic.py; read by cadenza.abr_io.\n"
        f'name = "{scenario.name}"\n'
        f"mean_kbps = {scenario.mean_kbps:g}\n"
        f"rtt_ms = {scenario.rtt_ms:g}\n"
        f"loss = {scenario.loss:g}\n"
        f"duration_s = {DURATION_S:g}\n"
        f"seeds = [{', '.join(str(seed) for seed in seeds)}]\n"
    )


def write_scenario(out: Path, scenario: Scenario) -> list[Path]:
    """Write one scenario's traces and ``scenario.toml``; return the trace paths."""
    folder = out / scenario.name
    folder.mkdir(parents=True, exist_ok=True)
    seeds = [BASE_SEED + scenario.seed_offset + i for i in range(1, TRACES_PER_SCENARIO + 1)]
    written: list[Path] = []
    for i, seed in enumerate(seeds, start=1):
        name = f"{scenario.name}_{i}"
        trace = synthesize_trace(
            name,
            mean_kbps=scenario.mean_kbps,
            rtt_ms=scenario.rtt_ms,
            loss=scenario.loss,
            duration_s=DURATION_S,
            seed=seed,
        )
        path = folder / name
        path.write_text(format_trace(trace), encoding="utf-8")
        written.append(path)
    (folder / "scenario.toml").write_text(scenario_toml(scenario, seeds), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "synthetic",
        help="folder to write the scenario folders into (default: beside this script)",
    )
    args = parser.parse_args(argv)
    for scenario in SCENARIOS:
        paths = write_scenario(args.out, scenario)
        print(f"{scenario.name}: {len(paths)} traces in {args.out / scenario.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
