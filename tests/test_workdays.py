"""The working-day calendar behind review deadlines."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.workdays import WorkCalendar

KZ = WorkCalendar()
D = dt.date


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (D(2026, 11, 27), 1, D(2026, 11, 30)),  # Friday → Monday: the weekend does not count
        (D(2026, 11, 28), 1, D(2026, 11, 30)),  # a request on Saturday starts counting on Monday
        (D(2026, 11, 27), 15, D(2026, 12, 21)),  # 15 working days, skipping Independence Day (16 Dec, Wed)
        (D(2026, 12, 14), 3, D(2026, 12, 18)),
        # Year boundary: 1 Jan (Fri) off, 2 Jan (Sat) moves to Mon 4 Jan, 7 Jan (Orthodox Christmas) off.
        (D(2026, 12, 30), 4, D(2027, 1, 8)),
    ],
)
def test_add_working_days(start: dt.date, n: int, expected: dt.date) -> None:
    assert KZ.add_working_days(start, n) == expected


def test_holidays_on_a_weekend_move_to_the_next_working_day() -> None:
    # Nauryz 2026: 21 (Sat), 22 (Sun), 23 (Mon) March; the two weekend days move to 24 and 25 March.
    assert [KZ.is_working_day(D(2026, 3, d)) for d in range(20, 27)] == [True, False, False, False, False, False, True]


def test_religious_holidays_do_not_move() -> None:
    # Kurban Ait 2027 is on Sunday 16 May: no day off is added on Monday.
    assert not KZ.is_working_day(D(2027, 5, 16)) and KZ.is_working_day(D(2027, 5, 17))


def test_decreed_days_off_and_working_days() -> None:
    cal = WorkCalendar(extra_days_off=("2026-12-31",), extra_working_days=("2026-12-26",))
    assert not cal.is_working_day(D(2026, 12, 31))
    assert cal.is_working_day(D(2026, 12, 26))  # a Saturday made a working day
    assert KZ.is_working_day(D(2026, 12, 31)) and not KZ.is_working_day(D(2026, 12, 26))


def test_a_deployment_calendar_without_holidays_counts_weekdays() -> None:
    bare = WorkCalendar(holidays=(), fixed_days_off=(), movable=())
    assert bare.add_working_days(D(2026, 12, 14), 3) == D(2026, 12, 17)
    assert bare.working_days_between(D(2026, 11, 27), D(2026, 12, 21)) == 16


def test_working_days_between_matches_add_working_days() -> None:
    start = D(2026, 11, 27)
    for n in range(1, 40):
        assert KZ.working_days_between(start, KZ.add_working_days(start, n)) == n


def test_n_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KZ.add_working_days(D(2026, 1, 1), 0)
