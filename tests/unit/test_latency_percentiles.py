"""Latency percentiles of the experiments and benches come from ``statistics.quantiles``."""

from __future__ import annotations

import statistics

import pytest

from loadtests.experiments.analysis import percentile, percentiles


def test_percentiles_interpolate_between_the_nearest_samples() -> None:
    assert percentiles(float(ms) for ms in range(1, 101)) == {
        "p50": 50.5,
        "p95": 95.05,
        "p99": 99.01,
        "count": 100,
    }


def test_the_fiftieth_percentile_is_the_median() -> None:
    samples = [9.0, 1.0, 4.0, 2.5, 7.0, 3.0]
    assert percentile(samples, 50) == statistics.median(samples)


@pytest.mark.parametrize("percent", [1, 50, 99])
def test_one_sample_is_every_percentile(percent: int) -> None:
    assert percentile([3.25], percent) == 3.25


def test_no_samples_have_no_percentiles() -> None:
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "count": 0}
