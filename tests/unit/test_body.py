"""The JSON body loader refuses what Python's json accepts but the API must not."""
import pytest

from clarity.api import body
from clarity.errors import BadRequest


def rejected(raw: bytes) -> body.BodyRejected:
    with pytest.raises(body.BodyRejected) as caught:
        body.load(raw)
    return caught.value


def test_ordinary_documents_load_unchanged():
    assert body.load(b'{"a": [1, 2.5, "x", null, true], "b": {"c": -3}}') == {"a": [1, 2.5, "x", None, True],
                                                                              "b": {"c": -3}}


@pytest.mark.parametrize("depth", [body.MAX_DEPTH + 1, 972, 200_000])
def test_nesting_deeper_than_the_limit_is_a_bad_request(depth):
    with pytest.raises(BadRequest, match="nests deeper"):
        body.load(b"[" * depth + b"]" * depth)
    with pytest.raises(BadRequest, match="nests deeper"):
        body.load(b'{"a":' * depth + b"1" + b"}" * depth)


def test_nesting_at_the_limit_loads():
    depth = body.MAX_DEPTH
    assert body.load(b"[" * depth + b"]" * depth) is not None


def test_an_integer_with_too_many_digits_names_its_field():
    error = rejected(b'{"readings": [{"value": 1}, {"value": ' + b"9" * 4301 + b"}]}")
    assert error.status == 422 and error.field == "readings[1].value"
    assert body.load(b'{"v": -' + b"9" * body.MAX_INTEGER_DIGITS + b"}")["v"] < 0
    assert rejected(b'{"v": ' + b"9" * (body.MAX_INTEGER_DIGITS + 1) + b"}").field == "v"


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_non_finite_numbers_are_refused(constant):
    assert rejected(b'{"x": [' + constant + b"]}").field == "x[0]"


@pytest.mark.parametrize("text", [rb'"\ud800"', rb'"a\udfffb"', rb'"\uDBFF"', rb'"\ude00\ud83d"'])
def test_a_lone_surrogate_is_refused_naming_the_field(text):
    error = rejected(b'{"patient": {"last_name": ' + text + b"}}")
    assert error.field == "patient.last_name"
    assert set(error.document["patient"]) == {"last_name"}  # what parsed, for sign-in's audit


def test_a_lone_surrogate_in_a_key_is_refused_without_echoing_it():
    assert rejected(rb'{"ok": {"\ud800": 1}}').field == "ok.?"


def test_a_surrogate_pair_is_a_valid_character():
    assert body.load(rb'{"name": "\ud83d\ude00"}') == {"name": "\U0001F600"}


def test_bytes_that_are_not_utf8_or_json_are_a_bad_request():
    for raw in (b"\xed\xa0\x80", b"\xff", b"{", b"", b"{'a': 1}"):
        with pytest.raises(BadRequest, match="not valid JSON"):
            body.load(raw)
