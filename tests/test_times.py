"""Time requests as people pass them: strings, dates, datetimes, numpy datetime64, pandas, pairs, slices."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import mosaic
from mosaic import InvalidInputError
from mosaic.times import parse_time

JUNE = (pd.Timestamp("2024-06-01", tz="UTC"), pd.Timestamp("2024-07-01", tz="UTC"))
JUNE_1 = (pd.Timestamp("2024-06-01", tz="UTC"), pd.Timestamp("2024-06-02", tz="UTC"))
JUNE_1_TO_11 = (pd.Timestamp("2024-06-01", tz="UTC"), pd.Timestamp("2024-06-12", tz="UTC"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-06", JUNE),
        (np.datetime64("2024-06"), JUNE),  # month precision: the whole month, as the string
        (pd.Period("2024-06", freq="M"), JUNE),
        ("2024-06-01", JUNE_1),
        ("20240601", JUNE_1),
        (np.datetime64("2024-06-01"), JUNE_1),  # day precision: the whole day
        (dt.date(2024, 6, 1), JUNE_1),
        (pd.Period("2024-06-01", freq="D"), JUNE_1),
        ((np.datetime64("2024-06-01"), np.datetime64("2024-06-11")), JUNE_1_TO_11),  # inclusive pair
        ([dt.date(2024, 6, 1), dt.date(2024, 6, 11)], JUNE_1_TO_11),
        (slice("2024-06-01", "2024-06-11"), JUNE_1_TO_11),  # as xarray's sel: both ends inclusive
        (slice(np.datetime64("2024-06-01"), np.datetime64("2024-06-11")), JUNE_1_TO_11),
        (np.array(["2024-06-01", "2024-06-11"], dtype="datetime64[D]"), JUNE_1_TO_11),
        ("2024-06-01/2024-06-11", JUNE_1_TO_11),
        ((None, "2024-06"), (None, JUNE[1])),
        (slice("2024-06", None), (JUNE[0], None)),
        ("../2024-06", (None, JUNE[1])),
        (np.datetime64("2024"), (pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2025-01-01", tz="UTC"))),
    ],
)
def test_periods_and_ranges(value, expected):
    assert parse_time(value) == expected


def test_instants_naive_is_utc_and_aware_is_converted():
    noon = pd.Timestamp("2024-06-01T12:00", tz="UTC")
    one_us = pd.Timedelta(microseconds=1)
    for value in (
        dt.datetime(2024, 6, 1, 12),  # naive: UTC
        dt.datetime(2024, 6, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        pd.Timestamp("2024-06-01T12:00"),
        pd.Timestamp("2024-06-01T14:00", tz="Europe/Rome"),  # CEST, UTC+2
        np.datetime64("2024-06-01T12:00:00"),
        np.datetime64("2024-06-01T12:00:00.000000000"),
        "2024-06-01T12:00:00Z",
        "2024-06-01T14:00:00+02:00",
    ):
        assert parse_time(value) == (noon, noon + one_us), value
    # a pair of instants includes its end instant
    start, end = parse_time((dt.datetime(2024, 6, 1), pd.Timestamp("2024-06-11T09:00", tz="UTC")))
    assert (start, end) == (
        pd.Timestamp("2024-06-01", tz="UTC"),
        pd.Timestamp("2024-06-11T09:00", tz="UTC") + one_us,
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("June", "not a date or time: 'June'"),
        (np.datetime64("NaT"), "not a date or time"),
        (("2024-06-11", "2024-06-01"), "ends before it starts"),
        (slice("2024-06-01", "2024-06-11", 2), "cannot have a step"),
        (("2024-06-01", "2024-06-02", "2024-06-03"), "must be (start, end)"),
        (3.5, "not a date or time: 3.5"),
    ],
)
def test_bad_times_are_one_line_errors_naming_the_value(value, message):
    with pytest.raises(InvalidInputError, match=__import__("re").escape(message)) as err:
        parse_time(value)
    assert "\n" not in str(err.value)


SEAM12 = (11.88, 45.40, 12.12, 45.58)
JUNE_1_SCENES = {"S32-seam12-20240601", "S33-seam12-20240601"}


@pytest.mark.parametrize(
    "time",
    [
        "2024-06-01",
        np.datetime64("2024-06-01"),
        dt.date(2024, 6, 1),
        pd.Period("2024-06-01", freq="D"),
        (np.datetime64("2024-06-01"), np.datetime64("2024-06-01")),
        slice("2024-06-01", "2024-06-01"),
        (pd.Timestamp("2024-06-01"), pd.Timestamp("2024-06-01T23:59:59")),
    ],
)
def test_every_form_of_one_day_finds_that_days_scenes(demo_index, time):
    the_plan = mosaic.plan(SEAM12, "EPSG:4326", time, index=demo_index, resolution=0.002, bands="B02")
    assert set(the_plan.scenes) == JUNE_1_SCENES
    assert [str(t)[:10] for t in the_plan.times] == ["2024-06-01"]


def test_a_datetime64_pair_and_a_slice_span_several_dates(demo_index):
    for time in (
        (np.datetime64("2024-06-01"), np.datetime64("2024-06-11")),
        slice(np.datetime64("2024-06-01"), np.datetime64("2024-06-11")),
        np.datetime64("2024-06"),
    ):
        ds = mosaic.load(SEAM12, "EPSG:4326", time, index=demo_index, resolution=0.002, bands="B02")
        days = [str(t)[:10] for t in ds.time.values]
        expected = ["2024-06-01", "2024-06-11"] + (["2024-06-21"] if isinstance(time, np.datetime64) else [])
        assert days == expected, time
