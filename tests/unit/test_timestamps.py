"""common.timestamp_field / parse_timestamp: the API's one rule for times a client sends."""
from __future__ import annotations

import datetime as dt

import pytest
from marshmallow import Schema, ValidationError

from clarity.api.common import OFFSET_REQUIRED, parse_timestamp, timestamp_field


class Window(Schema):
    window_start = timestamp_field("from", load_default=None)
    starts_at = timestamp_field()


@pytest.mark.parametrize("text, instant", [
    ("2030-05-01T09:00:00Z", dt.datetime(2030, 5, 1, 9, tzinfo=dt.timezone.utc)),
    ("2030-05-01T11:00:00+02:00", dt.datetime(2030, 5, 1, 9, tzinfo=dt.timezone.utc)),
    ("2030-05-01T04:30:00.250-04:30", dt.datetime(2030, 5, 1, 9, 0, 0, 250_000, tzinfo=dt.timezone.utc)),
])
def test_a_time_with_an_offset_names_one_instant(text, instant):
    assert parse_timestamp(text) == instant


@pytest.mark.parametrize("text", ["2030-05-01T09:00:00", "2030-05-01", "2030-05-01T09:00:00 02:00",
                                  "yesterday", "", None, 1904112000])
def test_anything_but_a_time_with_an_offset_is_none(text):
    assert parse_timestamp(text) is None


def test_the_field_keeps_its_data_key_and_loads_an_aware_datetime():
    loaded = Window().load({"from": "2030-05-01T09:00:00Z", "starts_at": "2030-05-01T10:00:00+01:00"})

    assert loaded == {"window_start": dt.datetime(2030, 5, 1, 9, tzinfo=dt.timezone.utc),
                      "starts_at": dt.datetime(2030, 5, 1, 9, tzinfo=dt.timezone.utc)}


@pytest.mark.parametrize("text", ["2030-05-01T09:00:00", "next tuesday"])
def test_the_field_refuses_a_time_without_an_offset_naming_it(text):
    with pytest.raises(ValidationError) as refused:
        Window().load({"from": text})

    assert refused.value.messages == {"from": [OFFSET_REQUIRED]}
