"""Working-day calendar for legal deadlines (weekends, public holidays, holidays moved off weekends).

Kazakhstan's defaults (Law "On holidays in the Republic of Kazakhstan"): national and state holidays
that fall on a day off move to the next working day; religious holidays (Orthodox Christmas, Kurban
Ait) do not. Kurban Ait follows the lunar calendar, so its date is listed per year. A deployment
replaces any of this in config: REVIEW_HOLIDAYS (recurring "MM-DD"), REVIEW_MOVABLE_HOLIDAYS
("YYYY-MM-DD", not moved) and REVIEW_EXTRA_DAYS_OFF / REVIEW_EXTRA_WORKING_DAYS (government decrees).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

KZ_HOLIDAYS = (
    "01-01", "01-02",  # New Year
    "03-08",  # International Women's Day
    "03-21", "03-22", "03-23",  # Nauryz meyramy
    "05-01",  # Unity Day of the people of Kazakhstan
    "05-07",  # Defender of the Fatherland Day
    "05-09",  # Victory Day
    "07-06",  # Capital Day
    "08-30",  # Constitution Day
    "10-25",  # Republic Day
    "12-16",  # Independence Day
)
KZ_RELIGIOUS = (
    "01-07",  # Orthodox Christmas (not moved)
)
KZ_MOVABLE = (  # Kurban Ait, first day (not moved)
    "2024-06-16", "2025-06-06", "2026-05-27", "2027-05-16", "2028-05-05",
)


@dataclass(frozen=True)
class WorkCalendar:
    """Count working days: Monday to Friday, except holidays, with moved holidays and decreed changes."""

    holidays: tuple[str, ...] = KZ_HOLIDAYS  # "MM-DD", moved to the next working day when on a day off
    fixed_days_off: tuple[str, ...] = KZ_RELIGIOUS  # "MM-DD", never moved
    movable: tuple[str, ...] = KZ_MOVABLE  # "YYYY-MM-DD", never moved
    extra_days_off: tuple[str, ...] = ()  # "YYYY-MM-DD" (decrees)
    extra_working_days: tuple[str, ...] = ()  # "YYYY-MM-DD": a weekend day made a working day
    weekend: tuple[int, ...] = (5, 6)
    _cache: dict[int, frozenset[dt.date]] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def _working(self) -> frozenset[dt.date]:
        return frozenset(dt.date.fromisoformat(d) for d in self.extra_working_days)

    def days_off(self, year: int) -> frozenset[dt.date]:
        """Every non-weekend day off in `year` (holidays, moved holidays, religious and decreed ones)."""
        found = self._cache.get(year)
        if found is not None:
            return found
        off: set[dt.date] = set()
        for md in self.fixed_days_off:
            off.add(dt.date.fromisoformat(f"{year}-{md}"))
        for iso in (*self.movable, *self.extra_days_off):
            day = dt.date.fromisoformat(iso)
            if day.year == year:
                off.add(day)
        # National holidays, in date order, each moved to the next day that is not already off.
        for md in sorted(self.holidays):
            day = dt.date.fromisoformat(f"{year}-{md}")
            if day.weekday() in self.weekend or day in off:
                moved = day + dt.timedelta(days=1)
                while moved.weekday() in self.weekend or moved in off or moved.strftime("%m-%d") in self.holidays:
                    moved += dt.timedelta(days=1)
                off.add(moved)
            off.add(day)
        result = frozenset(off)
        self._cache[year] = result
        return result

    def is_working_day(self, day: dt.date) -> bool:
        if day in self._working:
            return True
        if day.weekday() in self.weekend:
            return False
        # A holiday of late December can move into January: look at the previous year too.
        return day not in self.days_off(day.year) and day not in self.days_off(day.year - 1)

    def add_working_days(self, start: dt.date, n: int) -> dt.date:
        """Return the n-th working day after `start` (the day of `start` itself does not count)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        day, counted = start, 0
        while counted < n:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                counted += 1
        return day

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """How many working days lie after `start` up to and including `end`."""
        count, day = 0, start
        while day < end:
            day += dt.timedelta(days=1)
            count += self.is_working_day(day)
        return count


def calendar_from_config(config: Mapping[str, Any]) -> WorkCalendar:
    def strings(key: str, default: Iterable[str]) -> tuple[str, ...]:
        value = config.get(key)
        return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else tuple(default)

    return WorkCalendar(
        holidays=strings("REVIEW_HOLIDAYS", KZ_HOLIDAYS),
        fixed_days_off=strings("REVIEW_FIXED_DAYS_OFF", KZ_RELIGIOUS),
        movable=strings("REVIEW_MOVABLE_HOLIDAYS", KZ_MOVABLE),
        extra_days_off=strings("REVIEW_EXTRA_DAYS_OFF", ()),
        extra_working_days=strings("REVIEW_EXTRA_WORKING_DAYS", ()),
    )
