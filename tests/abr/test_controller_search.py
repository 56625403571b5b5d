"""samples/traces/controller_search.py: its configurations and its training traces,
which must share nothing with the bundled sets the report's goals are measured on."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cadenza.abr.controller import DEFAULT_CONTROLLER
from samples.traces.controller_search import (
    HERE,
    HOLD_GRID,
    NO_HOLD,
    SPACE,
    configuration,
    scenario_traces,
)


def test_a_candidate_sets_plan_and_controller_fields() -> None:
    config = configuration({"plan_terminal_weight": 0.2, "max_error": 0.3, "reversion": 0.4})
    assert config.plan.terminal_weight == 0.2
    assert (config.max_error, config.reversion) == (0.3, 0.4)
    assert config.plan.horizon == DEFAULT_CONTROLLER.plan.horizon
    assert config.start_samples == DEFAULT_CONTROLLER.start_samples


def test_every_value_of_the_space_makes_a_configuration() -> None:
    for key, values in (SPACE | HOLD_GRID).items():
        for value in values:
            config = configuration({key: value})
            owners: dict[str, object] = {"plan_": config.plan, "hold_": config.hold}
            owner = next((o for prefix, o in owners.items() if key.startswith(prefix)), config)
            assert getattr(owner, key.removeprefix("plan_").removeprefix("hold_")) == value


def test_the_hold_grid_holds_the_defaults_and_check_can_turn_the_hold_off() -> None:
    hold = DEFAULT_CONTROLLER.hold
    for key, values in HOLD_GRID.items():
        assert getattr(hold, key.removeprefix("hold_")) in values
    assert hold.enabled and not NO_HOLD.hold.enabled
    assert NO_HOLD.plan == DEFAULT_CONTROLLER.plan and NO_HOLD.samples == DEFAULT_CONTROLLER.samples


@pytest.mark.parametrize("scenario", ["3g", "satellite", "wifi"])
def test_training_traces_are_the_scenario_on_other_seeds(scenario: str) -> None:
    params = tomllib.loads((Path(HERE) / "synthetic" / scenario / "scenario.toml").read_text())
    traces = scenario_traces(scenario, 3, 70_001)
    bundled = set(params["seeds"])
    assert not bundled & {70_001, 70_002, 70_003, 50_001}
    for trace in traces:
        assert trace.rtt_s == pytest.approx(params["rtt_ms"] / 1000)
        goodput_bps = params["mean_kbps"] * 1000 * (1 - params["loss"])  # lost packets resent
        assert trace.mean_bps(600.0) == pytest.approx(goodput_bps, rel=0.05)
    assert len({trace.throughput_bps for trace in traces}) == 3
