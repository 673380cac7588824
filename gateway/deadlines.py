"""Legal deadlines in the deployment's time zone and working-day calendar. Pure: settings are passed in."""

from __future__ import annotations

import calendar as _calendar
import datetime as dt
import zoneinfo

from gateway.settings import Settings


def end_of_day(day: dt.date, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The deadline instant of a legal day: midnight at its end, in `zone`, as UTC."""
    local = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 0), tzinfo=zone)
    return local.astimezone(dt.UTC)


def local_date(at: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.date:
    """The calendar date of `at` where the person lives."""
    return at.astimezone(zone).date()


def last_day(due_at: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.date:
    """The last day of a period whose deadline instant is `due_at` (the midnight that ends that day).

    This is the date to show a person: a review due by the end of 22 December is due "by 22 December", not by
    the 23rd that `due_at` falls on.
    """
    return local_date(due_at - dt.timedelta(microseconds=1), zone)


def due_date(requested_at: dt.datetime, settings: Settings) -> dt.datetime:
    """The end of the n-th working day after the request (n = REVIEW_PERIOD_WORKING_DAYS)."""
    zone = settings.zone
    last = settings.calendar.add_working_days(local_date(requested_at, zone), settings.review_period_working_days)
    return end_of_day(last, zone)


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day `months` later (the month's last day when it is shorter)."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return dt.date(year, month, min(day.day, _calendar.monthrange(year, month)[1]))


def review_request_deadline(decided_at: dt.datetime, settings: Settings) -> dt.date:
    """The last day on which human review may be requested: the decision date + the configured window."""
    return local_date(decided_at, settings.zone) + dt.timedelta(days=settings.review_request_window_days)
