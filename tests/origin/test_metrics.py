"""What ``/metrics`` exports: base units, no ``*_created``, process and build info, every
closed label set from the start, and Redis health only where there is a Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from cadenza.abr.controller import Reason
from cadenza.origin.core.request import Handover
from cadenza.origin.errors import TokenExpiredError
from cadenza.origin.metrics import create_metrics
from cadenza.origin.steering_policy import SteeringArg

BASE_UNITS = ("_seconds", "_bytes", "_bits_per_second")


def _samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _value(samples: list[Sample], name: str, **labels: str) -> float | None:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def test_no_created_series_and_no_kbps() -> None:
    metrics = create_metrics()
    metrics.requests.labels("media", "200", "miss").inc()
    metrics.latency.labels("media").observe(0.01)
    text = metrics.render().decode()
    names = {s.name for s in _samples(text)}
    assert "cadenza_requests_total" in names
    assert "cadenza_request_duration_seconds_count" in names
    assert not [n for n in names if n.endswith("_created")]
    assert "kbps" not in text


def test_quantities_are_named_in_base_units() -> None:
    text = create_metrics().render().decode()
    for family in text_string_to_metric_families(text):
        if family.type == "histogram" and family.name != "cadenza_session_qoe":
            assert family.name.endswith(BASE_UNITS), family.name


def test_session_rates_are_observed_in_bits_per_second() -> None:
    metrics = create_metrics()
    metrics.session_throughput_bps.observe(128_000)
    samples = _samples(metrics.render().decode())
    name = "cadenza_session_throughput_bits_per_second_bucket"
    assert _value(samples, name, le="96000.0") == 0
    assert _value(samples, name, le="128000.0") == 1


def test_process_metrics_and_build_info() -> None:
    samples = _samples(create_metrics().render().decode())
    assert (_value(samples, "process_resident_memory_bytes") or 0) > 0
    assert _value(samples, "process_cpu_seconds_total") is not None
    (info,) = [s for s in samples if s.name == "cadenza_build_info"]
    assert info.value == 1
    assert info.labels["version"] == version("cadenza")
    assert info.labels["python"] == ".".join(map(str, sys.version_info[:3]))


def test_closed_label_sets_are_there_before_the_first_event() -> None:
    samples = _samples(create_metrics().render().decode())
    for reason in Handover:
        assert _value(samples, "cadenza_fast_path_handovers_total", reason=reason.value) == 0
    for decision in Reason:
        assert _value(samples, "cadenza_abr_decisions_total", reason=decision.value) == 0
    for arg in SteeringArg:
        assert _value(samples, "cadenza_steering_malformed_args_total", arg=arg.value) == 0
    assert _value(samples, "cadenza_access_denied_total", reason=TokenExpiredError.code) == 0
    assert _value(samples, "cadenza_storage_errors_total", backend="s3", kind="timeout") == 0
    assert _value(samples, "cadenza_beacons_total", kind="post", result="rate_limited") == 0
    assert _value(samples, "cadenza_ip_rate_limited_total", route="beacons") == 0
    assert _value(samples, "cadenza_hot_cache_lookups_total", result="stale") == 0


def test_a_preset_series_counts_from_zero() -> None:
    metrics = create_metrics()
    metrics.fast_path_handovers.labels(Handover.METHOD.value).inc()
    samples = _samples(metrics.render().decode())
    assert _value(samples, "cadenza_fast_path_handovers_total", reason="method") == 1
    assert _value(samples, "cadenza_fast_path_handovers_total", reason="path") == 0


def test_redis_health_is_exported_only_with_redis() -> None:
    without = _samples(create_metrics().render().decode())
    assert _value(without, "cadenza_redis_up") is None
    assert _value(without, "cadenza_redis_fallbacks_total", store="sessions") is None
    metrics = create_metrics(shared_sessions=True)
    metrics.redis_up.set(1)
    with_redis = _samples(metrics.render().decode())
    assert _value(with_redis, "cadenza_redis_up") == 1
    assert _value(with_redis, "cadenza_redis_fallbacks_total", store="population") == 0


# Run in a fresh interpreter: prometheus_client picks its multiprocess value class when it
# is imported, from PROMETHEUS_MULTIPROC_DIR.
WORKER = """
from cadenza.origin.metrics import create_metrics
metrics = create_metrics()
metrics.requests.labels("media", "200", "hit").inc(3)
print(metrics.render().decode())
"""


def test_workers_export_their_processes_build_info_and_no_created(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first = subprocess.run(
        [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, check=True
    )
    # The first worker has exited: its counts stay, its process is gone.
    text = subprocess.run(
        [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert first.returncode == 0
    samples = _samples(text)
    assert _value(samples, "cadenza_requests_total", route="media", cache="hit") == 6
    memory = [s for s in samples if s.name == "process_resident_memory_bytes"]
    assert len(memory) == 1, "only live workers"
    assert memory[0].labels["pid"].isdigit() and memory[0].value > 0
    assert _value(samples, "cadenza_build_info", version=version("cadenza")) == 1
    assert not [s for s in samples if s.name.endswith("_created")]
    assert _value(samples, "cadenza_redis_up") is None
