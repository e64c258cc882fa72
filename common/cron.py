"""Cron schedules: 5 fields (minute first) or 6 with **seconds first** (Quartz/Spring order).

croniter's own 6-field order puts seconds last; we always pass `second_at_beginning`, so
`*/2 * * * * *` fires every two seconds. Times are computed in the job's time zone and
returned in UTC, so a 02:30 job is right across both DST changes of its zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter


class InvalidSchedule(ValueError):
    """The cron expression or the time zone cannot be used."""


def validate_schedule(expression: str) -> str:
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise InvalidSchedule(
            f"a schedule has 5 fields (minute hour day month weekday) or 6 with seconds "
            f"first; got {len(fields)}"
        )
    normalized = " ".join(fields)
    if not croniter.is_valid(normalized, second_at_beginning=True):
        raise InvalidSchedule(f"not a valid cron expression: {expression!r}")
    return normalized


def validate_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(f"unknown time zone: {name!r}") from exc


# A wall-clock tick near a DST change may map to two instants or none, and around a
# fall-back the wall-clock order of ticks is not their order in time (02:00 the second
# time comes after 02:30 the first time). Offsets of a zone change by less than this
# within any such window, so sampling them this far either side of a moment finds every
# offset in play.
_OFFSET_WINDOW = timedelta(hours=3)
_MAX_SCAN = 20_000


def _instants(wall: datetime, zone: ZoneInfo, repeat_in_fold: bool) -> list[datetime]:
    """The UTC instants of a naive wall-clock tick in a zone.

    A tick in the spring-forward gap does not exist: it fires shifted by the gap (the
    fold=0 reading, 02:30 → 03:30). A tick in the fall-back hour exists twice: it fires
    once, at the first occurrence, unless the schedule's hour field repeats every hour
    (`*`, `*/n`), where both occurrences are real ticks.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if second == first:
        return [first]
    if second < first:
        # fold=0 resolves a gap time with the offset before the change: later than fold=1.
        return [first]
    return [first, second] if repeat_in_fold else [first]


def _offsets(zone: ZoneInfo, moment: datetime) -> tuple[timedelta, timedelta]:
    """The smallest and largest UTC offset of the zone around a moment."""
    offsets = [
        (moment + d).astimezone(zone).utcoffset() or timedelta(0)
        for d in (-_OFFSET_WINDOW, timedelta(0), _OFFSET_WINDOW)
    ]
    return min(offsets), max(offsets)


def _wall(moment: datetime, offset: timedelta) -> datetime:
    return (moment + offset).replace(tzinfo=None)


def _hour_repeats(expression: str) -> bool:
    fields = expression.split()
    hour = fields[2] if len(fields) == 6 else fields[1]
    return hour == "*" or hour.startswith("*/")


def _iterator(expression: str, start: datetime) -> croniter:
    return croniter(expression, start, second_at_beginning=True)


def next_tick(expression: str, tz: str, after: datetime) -> datetime:
    """The first tick strictly after `after`, in UTC."""
    expression = validate_schedule(expression)
    zone = validate_timezone(tz)
    repeat = _hour_repeats(expression)
    after = after.astimezone(UTC)
    # A tick instant i > after has the wall time i + offset(i) > after + smallest offset.
    lowest, _ = _offsets(zone, after)
    it = _iterator(expression, _wall(after, lowest) - timedelta(seconds=1))
    best: datetime | None = None
    stop: datetime | None = None
    try:
        for _ in range(_MAX_SCAN):
            wall: datetime = it.get_next(datetime)
            if best is not None and stop is not None and wall >= stop:
                return best
            for instant in _instants(wall, zone, repeat):
                if instant > after and (best is None or instant < best):
                    best = instant
                    # A later wall time w can only beat it if w - offset(w) < best.
                    stop = _wall(best, _offsets(zone, best)[1])
    except CroniterBadDateError as exc:
        raise InvalidSchedule(f"{expression!r} never fires after {after.isoformat()}") from exc
    if best is not None:
        return best
    raise InvalidSchedule(f"{expression!r} has no tick after {after.isoformat()}")


def latest_tick(expression: str, tz: str, at_or_before: datetime) -> datetime | None:
    """The last tick at or before the given moment, in UTC (None if there is none)."""
    expression = validate_schedule(expression)
    zone = validate_timezone(tz)
    repeat = _hour_repeats(expression)
    moment = at_or_before.astimezone(UTC)
    # A tick instant i <= moment has the wall time i + offset(i) <= moment + largest offset.
    _, highest = _offsets(zone, moment)
    it = _iterator(expression, _wall(moment, highest) + timedelta(seconds=1))
    best: datetime | None = None
    stop: datetime | None = None
    try:
        for _ in range(_MAX_SCAN):
            wall: datetime = it.get_prev(datetime)
            if best is not None and stop is not None and wall <= stop:
                return best
            for instant in _instants(wall, zone, repeat):
                if instant <= moment and (best is None or instant > best):
                    best = instant
                    # An earlier wall time w can only beat it if w - offset(w) > best.
                    stop = _wall(best, _offsets(zone, best)[0])
    except CroniterBadDateError:
        return best
    return best
