"""Keyset pages and their cursors: one helper splits every list, one codec signs every cursor."""
import base64
import dataclasses
import datetime as dt
import uuid

import pytest

from clarity import create_app
from clarity.api import common, cursors
from clarity.config import Settings
from clarity.errors import BadRequest, Unavailable
from clarity.pagination import keyset, page
from clarity.security.crypto import Keyring, generate_key

USERS = "users.list_users"
ALERTS = "alerts.list_patient_alerts"
PATIENT_A, PATIENT_B = uuid.uuid4(), uuid.uuid4()
MOMENT = dt.datetime(2030, 5, 1, 9, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))


@dataclasses.dataclass
class Row:
    created_at: dt.datetime
    id: int


def ring(blind_key: str | None = None) -> Keyring:
    return Keyring({"k1": b"\x01" * 32}, "k1", base64.urlsafe_b64decode((blind_key or generate_key()) + "="))


@pytest.fixture(scope="module")
def keyring():
    return ring()


def encode(position, keyring, endpoint=USERS, path_args=None):
    return cursors.encode(position, keyring=keyring, endpoint=endpoint, path_args=path_args)


def decode(cursor, keyring, endpoint=USERS, path_args=None):
    return cursors.decode(cursor, keyring=keyring, endpoint=endpoint, path_args=path_args)


def rows(n):
    return [Row(MOMENT + dt.timedelta(seconds=i), i) for i in range(n)]


def test_a_page_with_a_row_beyond_it_continues_after_its_last_row():
    items, position = page(rows(4), 3, keyset("created_at", "id"))
    assert [r.id for r in items] == [0, 1, 2]
    assert position == (MOMENT + dt.timedelta(seconds=2), 2)


@pytest.mark.parametrize("fetched", [0, 2, 3])
def test_the_last_page_has_no_next_position(fetched):
    items, position = page(rows(fetched), 3, keyset("created_at", "id"))
    assert [r.id for r in items] == list(range(fetched)) and position is None


def test_a_single_attribute_key_is_still_a_tuple():
    assert page(rows(2), 1, keyset("id")) == ([rows(1)[0]], (0,))


def test_every_key_type_round_trips_with_its_type(keyring):
    position = (MOMENT, dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), dt.date(1985, 3, 4), uuid.uuid4(),
                12, -(2 ** 63), "heart_rate", "déjà vu 🩺 \"quoted\" ,[]", "")
    decoded = decode(encode(position, keyring), keyring)
    assert decoded == position
    assert [type(key) for key in decoded] == [type(key) for key in position]
    assert decoded[0].utcoffset() == MOMENT.utcoffset()


def test_a_cursor_is_url_safe_text_that_shows_no_key_in_the_clear(keyring):
    cursor = encode((MOMENT, PATIENT_A), keyring)
    assert cursors._TEXT.match(cursor) and "=" not in cursor
    assert str(PATIENT_A) not in cursor and PATIENT_A.hex not in cursor


def test_a_readings_cursor_with_the_longest_device_fits_the_parameter(keyring):
    cursor = encode((MOMENT, "temperature", "\U0001fa7a" * 200), keyring, "biometrics.list_readings")
    assert len(cursor) <= common.MAX_CURSOR_LENGTH


@pytest.mark.parametrize("key", [True, 1.5, None, b"x", object()])
def test_a_key_of_another_type_is_a_programming_error(keyring, key):
    with pytest.raises(TypeError):
        encode((key,), keyring)


def altered(cursor: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize("index", [0, cursors.MAC_BYTES - 1, cursors.MAC_BYTES, -1])
def test_an_altered_cursor_is_refused(keyring, index):
    with pytest.raises(cursors.InvalidCursor):
        decode(altered(encode((MOMENT, 7), keyring), index), keyring)


def test_a_truncated_or_extended_cursor_is_refused(keyring):
    cursor = encode((MOMENT, 7), keyring)
    for forged in (cursor[:-1], cursor[:-4], cursor[:cursors.MAC_BYTES], cursor + "A", cursor + "AAAA"):
        with pytest.raises(cursors.InvalidCursor):
            decode(forged, keyring)


def test_a_second_spelling_of_the_same_bytes_is_refused(keyring):
    cursor = encode((MOMENT, 7), keyring)
    if len(cursor) % 4 == 0:  # no unused bits to flip: lengthen the payload by one byte
        cursor = encode((MOMENT, 70), keyring)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(cursor[-1])
    respelled = cursor[:-1] + alphabet[last ^ 1]  # the lowest bit of the last character is unused
    with pytest.raises(cursors.InvalidCursor):
        decode(respelled, keyring)


@pytest.mark.parametrize("text", ["", "bm90LWEtY3Vyc29y", "not a cursor", "a=b", "%00%00", "A" * 40, "é" * 30])
def test_text_that_is_not_a_cursor_is_refused(keyring, text):
    with pytest.raises(cursors.InvalidCursor):
        decode(text, keyring)


def test_a_cursor_of_another_list_is_refused(keyring):
    with pytest.raises(cursors.InvalidCursor):
        decode(encode((MOMENT, 7), keyring, USERS), keyring, "audit_events.list_audit_events")


def test_a_cursor_of_another_patients_list_is_refused(keyring):
    cursor = encode((MOMENT, PATIENT_A), keyring, ALERTS, {"patient_id": PATIENT_A})
    assert decode(cursor, keyring, ALERTS, {"patient_id": PATIENT_A}) == (MOMENT, PATIENT_A)
    with pytest.raises(cursors.InvalidCursor):
        decode(cursor, keyring, ALERTS, {"patient_id": PATIENT_B})


def test_a_cursor_signed_under_another_key_is_refused(keyring):
    with pytest.raises(cursors.InvalidCursor):
        decode(encode((MOMENT, 7), ring()), keyring)


def test_workers_configured_with_the_same_key_read_each_others_cursors():
    blind = generate_key()
    assert decode(encode((MOMENT, 7), ring(blind)), ring(blind)) == (MOMENT, 7)


@pytest.fixture(scope="module")
def app(keyring):
    return create_app(Settings(env="test"), keyring=keyring)


def test_the_request_binds_a_cursor_to_its_list_and_a_foreign_one_is_400(app):
    with app.test_request_context(f"/api/v1/patients/{PATIENT_A}/alerts?status=open&limit=1"):
        position = (MOMENT, PATIENT_A)
        link = common.next_link(position)["Link"]
        cursor = link.split("cursor=")[1].split(">")[0]
        assert link.startswith(f"</api/v1/patients/{PATIENT_A}/alerts?status=open&limit=1&cursor=")
        assert link.endswith('>; rel="next"')
        assert common.decode_cursor(cursor) == position
    for other_list in (f"/api/v1/patients/{PATIENT_B}/alerts", "/api/v1/alerts", "/api/v1/users"):
        with app.test_request_context(f"{other_list}?cursor={cursor}"):
            with pytest.raises(BadRequest, match="The cursor is invalid") as refused:
                common.decode_cursor(cursor)
            assert refused.value.status == 400


def test_the_last_page_has_no_link_nor_next_cursor(app):
    with app.test_request_context("/api/v1/users"):
        assert common.next_link(None) == {} and common.encode_cursor(None) is None
        assert common.decode_cursor(None) is None


def test_a_link_keeps_the_window_it_was_given(app):
    start, end = MOMENT, MOMENT + dt.timedelta(days=7)
    with app.test_request_context("/api/v1/appointments?limit=2"):
        link = common.next_link((MOMENT, PATIENT_A), {"from": start.isoformat(), "to": end.isoformat()})["Link"]
    assert "limit=2&from=2030-05-01T09%3A00%3A00.123456%2B02%3A00&to=" in link and "&cursor=" in link


def test_without_keys_a_cursor_cannot_be_read_or_made():
    app = create_app(Settings(env="test"))
    with app.test_request_context("/api/v1/users"):
        with pytest.raises(Unavailable):
            common.decode_cursor("bm90LWEtY3Vyc29y")
        with pytest.raises(Unavailable):
            common.next_link((MOMENT, 7))
