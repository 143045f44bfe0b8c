"""Cron + timezone semantics, including Debian cron's DST behaviour at real transitions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pamd.schedule import CronSchedule, ScheduleError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def local(fires: list[datetime], tz: ZoneInfo) -> list[str]:
    return [f.astimezone(tz).isoformat() for f in fires]


@pytest.mark.parametrize(
    ("tz", "day_before", "expected_local"),
    [
        # Spring forward: 02:30 does not exist; the job runs once, at the first valid time (03:00 local).
        ("Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=UTC),
         ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
        ("America/New_York", datetime(2026, 3, 7, 12, tzinfo=UTC),
         ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    ],
)
def test_time_skipped_by_spring_forward_runs_once(tz: str, day_before: datetime, expected_local: list[str]) -> None:
    schedule = CronSchedule("30 2 * * *", tz)
    assert local(schedule.next_n(day_before, 2), ZoneInfo(tz)) == expected_local


@pytest.mark.parametrize(
    ("tz", "day_before", "expected_local"),
    [
        # Fall back: 01:30 (New York) / 02:30 (Berlin) happens twice; a fixed-time job runs only the first time.
        ("Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=UTC),
         ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
        ("America/New_York", datetime(2026, 10, 31, 12, tzinfo=UTC),
         ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    ],
)
def test_repeated_hour_runs_once(tz: str, day_before: datetime, expected_local: list[str]) -> None:
    minute, hour = ("30", "2") if tz == "Europe/Berlin" else ("30", "1")
    schedule = CronSchedule(f"{minute} {hour} * * *", tz)
    assert local(schedule.next_n(day_before, 2), ZoneInfo(tz)) == expected_local


def test_interval_jobs_keep_real_time_spacing_across_fall_back() -> None:
    # An every-30-minutes job neither doubles up nor leaves a gap in real (UTC) time across the transition.
    schedule = CronSchedule("*/30 * * * *", "America/New_York")
    fires = schedule.next_n(datetime(2026, 11, 1, 4, 0, tzinfo=UTC), 8)
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(fires))


def test_seconds_field_and_aliases() -> None:
    start = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert CronSchedule("*/15 * * * * *").next_n(start, 2) == [start + timedelta(seconds=15),
                                                                start + timedelta(seconds=30)]
    assert CronSchedule("@hourly").next_after(start) == start + timedelta(hours=1)
    assert CronSchedule("@daily", "Pacific/Auckland").next_after(start).astimezone(
        ZoneInfo("Pacific/Auckland")).hour == 0


def test_previous_and_between() -> None:
    schedule = CronSchedule("*/5 * * * *")
    moment = datetime(2026, 1, 1, 0, 7, 30, tzinfo=UTC)
    assert schedule.previous_at_or_before(moment) == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    assert schedule.previous_at_or_before(moment.replace(minute=5, second=0)) == moment.replace(minute=5, second=0)
    assert list(schedule.between(moment - timedelta(minutes=10), moment)) == [
        datetime(2026, 1, 1, 0, 0, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC)]
    assert schedule.min_interval(moment) == timedelta(minutes=5)


@pytest.mark.parametrize("expr", ["*/5 * * *", "61 * * * *", "* * * * * * *", "0 0 30 2 *", "@fortnightly", ""])
def test_bad_expressions(expr: str) -> None:
    with pytest.raises(ScheduleError, match="bad cron expression"):
        CronSchedule(expr)


def test_unknown_timezone() -> None:
    with pytest.raises(ScheduleError, match="unknown timezone 'Mars/Olympus'"):
        CronSchedule("* * * * *", "Mars/Olympus")


@settings(max_examples=200, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
    tz=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Pacific/Honolulu", "Pacific/Auckland",
                        "Australia/Lord_Howe"]),
    expr=st.sampled_from(["*/5 * * * *", "30 2 * * *", "0 * * * *", "15 1 * * 0", "0 0 1 * *", "*/20 * * * * *"]),
)
def test_fires_are_strictly_increasing_and_after_start(start: datetime, tz: str, expr: str) -> None:
    fires = CronSchedule(expr, tz).next_n(start, 5)
    assert fires[0] > start
    assert all(a < b for a, b in itertools.pairwise(fires))
    assert all(f.tzinfo is UTC for f in fires)
