"""Cron schedules: parsing (5 fields, or 6 with seconds first), tick semantics, and DST.

Every expected instant below is computed by hand from the 2025 DST changes:

- Europe/Berlin: 2025-03-30 01:00Z (02:00 CET → 03:00 CEST),
  2025-10-26 01:00Z (03:00 CEST → 02:00 CET; 02:00-03:00 local happens twice).
- America/New_York: 2025-03-09 07:00Z (02:00 EST → 03:00 EDT),
  2025-11-02 06:00Z (02:00 EDT → 01:00 EST; 01:00-02:00 local happens twice).
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from common.cron import (
    InvalidSchedule,
    latest_tick,
    next_tick,
    validate_schedule,
    validate_timezone,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def ticks_between(expression: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """Every tick in (start, end], by chaining `next_tick`."""
    found: list[datetime] = []
    tick = next_tick(expression, tz, start)
    while tick <= end:
        found.append(tick)
        tick = next_tick(expression, tz, tick)
    return found


def ticks_backwards(expression: str, tz: str, end: datetime, count: int) -> list[datetime]:
    """`count` ticks at or before `end`, latest first, by chaining `latest_tick`."""
    found: list[datetime] = []
    moment = end
    for _ in range(count):
        tick = latest_tick(expression, tz, moment)
        assert tick is not None
        found.append(tick)
        moment = tick - timedelta(microseconds=1)
    return found


class TestParsing:
    @pytest.mark.parametrize(
        ("expression", "normalized"),
        [
            ("*/5 * * * *", "*/5 * * * *"),
            ("30 2 * * *", "30 2 * * *"),
            ("*/2 * * * * *", "*/2 * * * * *"),
            ("  0   0 12  * * * ", "0 0 12 * * *"),
            ("0 15 10 ? * MON-FRI", "0 15 10 ? * MON-FRI"),
        ],
    )
    def test_valid_expressions_are_normalized(self, expression: str, normalized: str) -> None:
        assert validate_schedule(expression) == normalized

    @pytest.mark.parametrize(
        "expression",
        [
            "",
            "* * * *",
            "* * * * * * *",
            "@daily",
            "61 * * * *",
            "* 24 * * *",
            "0 0 0 0 0",
            "a b c d e",
            "60 * * * * *",
        ],
    )
    def test_invalid_expressions_raise(self, expression: str) -> None:
        with pytest.raises(InvalidSchedule):
            validate_schedule(expression)
        with pytest.raises(InvalidSchedule):
            next_tick(expression, "UTC", utc(2025, 6, 1))
        with pytest.raises(InvalidSchedule):
            latest_tick(expression, "UTC", utc(2025, 6, 1))

    def test_invalid_schedule_is_a_value_error(self) -> None:
        assert issubclass(InvalidSchedule, ValueError)

    @pytest.mark.parametrize(
        "tz", ["", "Nowhere/Land", "utc", "Europe/Berlin ", "../etc/passwd", "/etc/localtime"]
    )
    def test_unknown_time_zones_raise(self, tz: str) -> None:
        with pytest.raises(InvalidSchedule, match="time zone"):
            validate_timezone(tz)
        with pytest.raises(InvalidSchedule):
            next_tick("* * * * *", tz, utc(2025, 6, 1))
        with pytest.raises(InvalidSchedule):
            latest_tick("* * * * *", tz, utc(2025, 6, 1))

    def test_known_time_zone(self) -> None:
        assert validate_timezone(BERLIN) == ZoneInfo(BERLIN)

    def test_six_fields_put_seconds_first(self) -> None:
        start = utc(2025, 6, 1, 12, 0, 0, 500_000)
        assert ticks_between("*/2 * * * * *", "UTC", start, start + timedelta(seconds=7)) == [
            utc(2025, 6, 1, 12, 0, 2),
            utc(2025, 6, 1, 12, 0, 4),
            utc(2025, 6, 1, 12, 0, 6),
        ]
        # Seconds first: second 0, minute 0, hour 12, every day. Read with seconds last it
        # would be minute 0, hour 0, on the 12th of each month.
        assert next_tick("0 0 12 * * *", "UTC", utc(2025, 6, 1)) == utc(2025, 6, 1, 12)
        assert next_tick("0 0 12 * * *", "UTC", utc(2025, 6, 1, 12)) == utc(2025, 6, 2, 12)
        assert next_tick("30 0 * * * *", "UTC", utc(2025, 6, 1, 7, 59)) == utc(2025, 6, 1, 8, 0, 30)

    def test_every_second(self) -> None:
        start = utc(2025, 6, 1, 12, 0, 0)
        assert ticks_between("* * * * * *", "UTC", start, start + timedelta(seconds=3)) == [
            start + timedelta(seconds=s) for s in (1, 2, 3)
        ]
        assert latest_tick("* * * * * *", "UTC", start + timedelta(milliseconds=999)) == start

    def test_five_fields_start_with_minutes(self) -> None:
        assert ticks_between(
            "*/5 * * * *", "UTC", utc(2025, 6, 1, 12, 1), utc(2025, 6, 1, 12, 15)
        ) == [
            utc(2025, 6, 1, 12, 5),
            utc(2025, 6, 1, 12, 10),
            utc(2025, 6, 1, 12, 15),
        ]
        assert next_tick("30 2 * * *", "UTC", utc(2025, 6, 1)) == utc(2025, 6, 1, 2, 30)

    def test_a_schedule_that_never_fires(self) -> None:
        with pytest.raises(InvalidSchedule):
            next_tick("0 0 30 2 *", "UTC", utc(2025, 6, 1))
        assert latest_tick("0 0 30 2 *", "UTC", utc(2025, 6, 1)) is None


class TestTickSemantics:
    def test_next_tick_is_strictly_after(self) -> None:
        tick = utc(2025, 6, 1, 12, 5)
        assert next_tick("*/5 * * * *", "UTC", tick) == utc(2025, 6, 1, 12, 10)
        assert next_tick("*/5 * * * *", "UTC", tick - timedelta(microseconds=1)) == tick

    def test_latest_tick_is_at_or_before(self) -> None:
        tick = utc(2025, 6, 1, 12, 5)
        assert latest_tick("*/5 * * * *", "UTC", tick) == tick
        assert latest_tick("*/5 * * * *", "UTC", tick - timedelta(microseconds=1)) == utc(
            2025, 6, 1, 12, 0
        )
        assert latest_tick("*/5 * * * *", "UTC", tick + timedelta(minutes=4, seconds=59)) == tick

    def test_results_are_utc_whatever_the_input_zone(self) -> None:
        after = datetime(2025, 6, 1, 14, 0, tzinfo=ZoneInfo(BERLIN))  # 12:00Z
        tick = next_tick("30 * * * *", "UTC", after)
        assert tick == utc(2025, 6, 1, 12, 30)
        assert tick.utcoffset() == timedelta(0)
        latest = latest_tick("30 * * * *", "UTC", after)
        assert latest == utc(2025, 6, 1, 11, 30)
        assert latest.utcoffset() == timedelta(0)

    def test_schedule_is_read_in_the_job_zone(self) -> None:
        # 02:30 in Berlin summer (CEST, +2) is 00:30Z; in New York (EDT, -4) 06:30Z.
        assert next_tick("30 2 * * *", BERLIN, utc(2025, 6, 1)) == utc(2025, 6, 1, 0, 30)
        assert next_tick("30 2 * * *", NEW_YORK, utc(2025, 6, 1)) == utc(2025, 6, 1, 6, 30)

    def test_latest_tick_before_the_first_tick_of_a_window(self) -> None:
        # 01:30Z on the 1st is 03:30 in Berlin: the 02:30 tick of that day already passed.
        assert latest_tick("30 2 * * *", BERLIN, utc(2025, 6, 1, 0, 29)) == utc(2025, 5, 31, 0, 30)


# (zone, expression, start, expected ticks after start): a fixed-time job across DST.
FIXED_TIME_CASES = [
    pytest.param(
        BERLIN,
        "30 2 * * *",
        utc(2025, 3, 28, 12),
        # 29th 02:30 CET; 30th 02:30 does not exist → 03:30 CEST; 31st 02:30 CEST.
        [utc(2025, 3, 29, 1, 30), utc(2025, 3, 30, 1, 30), utc(2025, 3, 31, 0, 30)],
        id="berlin-spring-forward",
    ),
    pytest.param(
        BERLIN,
        "30 2 * * *",
        utc(2025, 10, 24, 12),
        # 25th 02:30 CEST; 26th 02:30 twice → the first (CEST) only; 27th 02:30 CET.
        [utc(2025, 10, 25, 0, 30), utc(2025, 10, 26, 0, 30), utc(2025, 10, 27, 1, 30)],
        id="berlin-fall-back",
    ),
    pytest.param(
        NEW_YORK,
        "30 2 * * *",
        utc(2025, 3, 7, 12),
        # 8th 02:30 EST; 9th 02:30 does not exist → 03:30 EDT; 10th 02:30 EDT.
        [utc(2025, 3, 8, 7, 30), utc(2025, 3, 9, 7, 30), utc(2025, 3, 10, 6, 30)],
        id="new-york-spring-forward",
    ),
    pytest.param(
        NEW_YORK,
        "30 2 * * *",
        utc(2025, 10, 31, 12),
        # New York repeats 01:00-02:00, so 02:30 stays unique: EDT, then EST.
        [utc(2025, 11, 1, 6, 30), utc(2025, 11, 2, 7, 30), utc(2025, 11, 3, 7, 30)],
        id="new-york-fall-back-0230",
    ),
    pytest.param(
        NEW_YORK,
        "30 1 * * *",
        utc(2025, 10, 31, 12),
        # 2nd 01:30 twice (05:30Z EDT, 06:30Z EST) → the first only.
        [utc(2025, 11, 1, 5, 30), utc(2025, 11, 2, 5, 30), utc(2025, 11, 3, 6, 30)],
        id="new-york-fall-back-0130",
    ),
]


class TestFixedTimeAcrossDst:
    @pytest.mark.parametrize(("tz", "expression", "start", "expected"), FIXED_TIME_CASES)
    def test_next_tick_fires_once_a_day(
        self, tz: str, expression: str, start: datetime, expected: list[datetime]
    ) -> None:
        assert ticks_between(expression, tz, start, expected[-1]) == expected

    @pytest.mark.parametrize(("tz", "expression", "start", "expected"), FIXED_TIME_CASES)
    def test_latest_tick_agrees(
        self, tz: str, expression: str, start: datetime, expected: list[datetime]
    ) -> None:
        end = expected[-1] + timedelta(hours=12)
        assert ticks_backwards(expression, tz, end, 3) == expected[::-1]

    def test_second_occurrence_of_the_ambiguous_time_is_no_tick(self) -> None:
        # 01:45Z on Oct 26 is 02:45 CET, after the repeated 02:30 (01:30Z): the day's only
        # tick was the first 02:30 (00:30Z).
        assert latest_tick("30 2 * * *", BERLIN, utc(2025, 10, 26, 1, 45)) == utc(
            2025, 10, 26, 0, 30
        )
        assert next_tick("30 2 * * *", BERLIN, utc(2025, 10, 26, 0, 30)) == utc(2025, 10, 27, 1, 30)

    def test_shifted_spring_tick_is_found_from_inside_the_gap_hour(self) -> None:
        # 01:00Z is the DST change itself (03:00 CEST): the shifted 02:30 is still ahead.
        assert next_tick("30 2 * * *", BERLIN, utc(2025, 3, 30, 1, 0)) == utc(2025, 3, 30, 1, 30)
        assert latest_tick("30 2 * * *", BERLIN, utc(2025, 3, 30, 1, 29)) == utc(2025, 3, 29, 1, 30)


class TestHourlyAcrossDst:
    def test_fall_back_fires_both_occurrences_of_the_repeated_hour(self) -> None:
        got = ticks_between("0 * * * *", BERLIN, utc(2025, 10, 25, 22, 30), utc(2025, 10, 26, 2))
        # 01:00 CEST, 02:00 CEST, 02:00 CET, 03:00 CET.
        assert got == [
            utc(2025, 10, 25, 23),
            utc(2025, 10, 26, 0),
            utc(2025, 10, 26, 1),
            utc(2025, 10, 26, 2),
        ]

        got = ticks_between("0 * * * *", NEW_YORK, utc(2025, 11, 2, 3, 30), utc(2025, 11, 2, 7))
        # 00:00 EDT, 01:00 EDT, 01:00 EST, 02:00 EST.
        assert got == [
            utc(2025, 11, 2, 4),
            utc(2025, 11, 2, 5),
            utc(2025, 11, 2, 6),
            utc(2025, 11, 2, 7),
        ]

    @pytest.mark.parametrize(
        ("tz", "local_day", "hours"),
        [
            (BERLIN, date(2025, 10, 26), 25),
            (BERLIN, date(2025, 3, 30), 23),
            (NEW_YORK, date(2025, 11, 2), 25),
            (NEW_YORK, date(2025, 3, 9), 23),
            (BERLIN, date(2025, 6, 1), 24),
        ],
    )
    def test_one_tick_per_real_hour_of_a_dst_day(
        self, tz: str, local_day: date, hours: int
    ) -> None:
        zone = ZoneInfo(tz)
        start = datetime.combine(local_day, datetime.min.time(), zone).astimezone(UTC)
        end = datetime.combine(local_day + timedelta(days=1), datetime.min.time(), zone)
        got = ticks_between(
            "0 * * * *", tz, start - timedelta(seconds=1), end - timedelta(seconds=1)
        )
        assert len(got) == hours
        assert got[0] == start
        # Nothing skipped, nothing doubled: exactly one hour between consecutive ticks.
        assert {b - a for a, b in itertools.pairwise(got)} == {timedelta(hours=1)}
        assert ticks_backwards("0 * * * *", tz, got[-1], hours) == got[::-1]

    def test_spring_forward_skips_nothing(self) -> None:
        got = ticks_between("0 * * * *", NEW_YORK, utc(2025, 3, 9, 5, 30), utc(2025, 3, 9, 8))
        # 01:00 EST, then 03:00 EDT (02:00 does not exist and lands on it), 04:00 EDT.
        assert got == [utc(2025, 3, 9, 6), utc(2025, 3, 9, 7), utc(2025, 3, 9, 8)]

    def test_sub_hourly_ticks_in_the_repeated_hour_are_in_time_order(self) -> None:
        # The second 02:00 (01:00Z) comes after the first 02:30 (00:30Z), not before it.
        expected = [
            utc(2025, 10, 26, 0, 0),
            utc(2025, 10, 26, 0, 30),
            utc(2025, 10, 26, 1, 0),
            utc(2025, 10, 26, 1, 30),
            utc(2025, 10, 26, 2, 0),
        ]
        got = ticks_between("0,30 * * * *", BERLIN, utc(2025, 10, 25, 23, 59), expected[-1])
        assert got == expected
        assert ticks_backwards("0,30 * * * *", BERLIN, expected[-1], 5) == expected[::-1]
        assert next_tick("0,30 * * * *", BERLIN, utc(2025, 10, 26, 0, 10)) == expected[1]
        assert latest_tick("0,30 * * * *", BERLIN, utc(2025, 10, 26, 1, 10)) == expected[2]

    def test_every_second_across_the_repeated_hour(self) -> None:
        change = utc(2025, 10, 26, 1)
        assert next_tick("* * * * * *", BERLIN, change - timedelta(seconds=1)) == change
        assert latest_tick("* * * * * *", BERLIN, change + timedelta(milliseconds=500)) == change


class TestDailyOverAYear:
    @pytest.mark.parametrize(
        ("tz", "expression", "local_time", "shifted_days"),
        [
            (BERLIN, "30 2 * * *", (2, 30), [date(2025, 3, 30)]),
            (BERLIN, "0 0 * * *", (0, 0), []),
            (NEW_YORK, "30 2 * * *", (2, 30), [date(2025, 3, 9)]),
            (NEW_YORK, "30 1 * * *", (1, 30), []),
        ],
    )
    def test_exactly_one_tick_per_calendar_day(
        self, tz: str, expression: str, local_time: tuple[int, int], shifted_days: list[date]
    ) -> None:
        zone = ZoneInfo(tz)
        start = datetime(2025, 1, 1, tzinfo=zone).astimezone(UTC)
        end = datetime(2026, 1, 1, tzinfo=zone).astimezone(UTC)
        got = ticks_between(
            expression, tz, start - timedelta(seconds=1), end - timedelta(seconds=1)
        )
        assert len(got) == 365
        local = [t.astimezone(zone) for t in got]
        assert [t.date() for t in local] == [
            date(2025, 1, 1) + timedelta(days=n) for n in range(365)
        ]
        # An ambiguous wall time fires at its first occurrence, never at the second (fold=1).
        assert not [t for t in local if t.fold]
        # Only a day whose wall time does not exist fires off it: one hour later.
        shifted = [t for t in local if (t.hour, t.minute) != local_time]
        assert [t.date() for t in shifted] == shifted_days
        assert all((t.hour, t.minute) == (local_time[0] + 1, local_time[1]) for t in shifted)
