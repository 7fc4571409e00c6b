"""How the pages print a moment to the minute (nyxcore/timezones.py `minutes`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from nyxcore.timezones import minutes, zone_named

BERLIN = zone_named("Europe/Berlin")


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 2, 9, 14, 59, 999_999, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
        datetime(2026, 7, 4, 23, 5, 1, tzinfo=BERLIN),
        datetime(2026, 3, 9, 8, 7, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
        datetime(2026, 12, 31, 23, 59, 30),  # naive
    ],
)
def test_minutes_prints_what_strftime_printed(moment):
    assert minutes(moment) == moment.strftime("%Y-%m-%d %H:%M")


def test_minutes_leaves_seconds_and_the_offset_out():
    assert minutes(datetime(2026, 12, 2, 9, 14, 59, tzinfo=timezone(timedelta(hours=5, minutes=30)))) == "2026-12-02 09:14"
