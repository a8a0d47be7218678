"""The latency histogram: bucket edges, percentiles against exact nearest-rank, merging."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.histogram import LatencyHistogram, bucket_bounds, bucket_of, nearest_rank

latencies = st.lists(st.integers(min_value=0, max_value=60 * 10**9), min_size=1, max_size=300)
percents = st.sampled_from([0, 1, 25, 50, 90, 99, 99.9, 100])


@given(st.integers(min_value=0, max_value=2**50))
def test_every_value_lies_in_its_bucket_and_buckets_are_narrow(value: int) -> None:
    low, high = bucket_bounds(bucket_of(value))
    assert low <= value <= high
    assert high - low <= max(0, low) / 128


def test_buckets_are_contiguous_and_ordered() -> None:
    previous_high = -1
    for index in range(0, 128 * 40):
        low, high = bucket_bounds(index)
        assert low == previous_high + 1
        assert bucket_of(low) == index
        assert bucket_of(high) == index
        previous_high = high


@given(latencies, percents)
def test_percentile_is_the_nearest_rank_within_one_bucket(values: list[int], p: float) -> None:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    exact = nearest_rank(values, p)
    answered = histogram.percentile(p)
    assert exact <= answered <= exact + exact / 128
    assert histogram.count == len(values)
    assert histogram.minimum == min(values)
    assert histogram.maximum == max(values)
    assert histogram.percentile(100) == max(values)


def test_nearest_rank_by_hand() -> None:
    values = [15, 20, 35, 40, 50]
    assert nearest_rank(values, 30) == 20
    assert nearest_rank(values, 40) == 20
    assert nearest_rank(values, 50) == 35
    assert nearest_rank(values, 100) == 50
    assert nearest_rank(values, 0) == 15


@given(latencies, latencies)
def test_merging_equals_recording_everything_in_one(left: list[int], right: list[int]) -> None:
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for value in left:
        a.record(value)
        both.record(value)
    for value in right:
        b.record(value)
        both.record(value)
    a.merge(b)
    assert a == both


def test_merging_into_an_empty_histogram_keeps_the_minimum() -> None:
    empty, other = LatencyHistogram(), LatencyHistogram()
    other.record(5_000)
    empty.merge(other)
    assert (empty.minimum, empty.maximum, empty.count) == (5_000, 5_000, 1)


def test_percentiles_of_a_skewed_distribution() -> None:
    rng = random.Random(4)
    values = [int(rng.lognormvariate(14, 1)) for _ in range(20_000)]
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    for p in (50, 90, 99, 99.9):
        exact = nearest_rank(values, p)
        assert exact <= histogram.percentile(p) <= exact * (1 + 1 / 128)
    assert histogram.mean == pytest.approx(sum(values) / len(values))


def test_empty_and_invalid() -> None:
    histogram = LatencyHistogram()
    assert histogram.percentile(99) == 0
    assert histogram.mean == 0.0
    with pytest.raises(ValueError, match="percent"):
        histogram.percentile(101)
    with pytest.raises(ValueError, match="no values"):
        nearest_rank([], 50)
