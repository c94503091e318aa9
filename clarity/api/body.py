"""Reading JSON bodies safely: one loader for every body the API accepts.

Python's json module accepts documents that later turn into 500s or stored garbage: nesting
deep enough to exhaust the interpreter's stack, integers with thousands of digits (whose
conversion is refused), ``NaN``/``Infinity``, and lone UTF-16 surrogates (``"\\ud800"``), which
are not Unicode scalar values and cannot be encoded to UTF-8 for PostgreSQL. ``load`` refuses
each of them, naming the field, before any schema sees the document.

A body is parsed by orjson (strict JSON, valid Unicode only, in C); only a body orjson refuses,
or one holding a run of 16 digits, takes the slower path that says exactly what is wrong.
Responses are written by orjson too.
"""
from __future__ import annotations

import json
import math
import re

import orjson

from flask.json.provider import DefaultJSONProvider
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from clarity.errors import BadRequest, Invalid

MAX_DEPTH = 32
MAX_INTEGER_DIGITS = 15  # every integer the API takes fits; JavaScript's safe range is 16 digits
# A lone surrogate can only arrive as a \u escape (raw surrogate bytes are not UTF-8): when the
# body holds no \uD800-\uDFFF escape, its strings need no check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Without a run of MAX_INTEGER_DIGITS + 1 digits, no integer in the body is too long: every
# digit becomes "0", then a plain substring search finds such a run (a regex takes 20x longer).
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGITS = b"0" * (MAX_INTEGER_DIGITS + 1)
_CONTAINERS = (dict, list)
_CONTAINERS_SET = frozenset(_CONTAINERS)


class BodyRejected(Invalid):
    """A body that parsed as JSON but holds a value the API never accepts (422).

    ``document`` is what was parsed (so sign-in can still attribute the attempt to an account).
    """

    def __init__(self, detail: str, *, field: str | None, document=None):
        super().__init__(detail, field=field)
        self.document = document


class _Refused:
    """Stands in for a number the parser must not build; reported with its field by the walk."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _parse_int(text: str):
    digits = len(text) - (text[0] == "-")
    return int(text) if digits <= MAX_INTEGER_DIGITS else _Refused("The number has too many digits.")


def _parse_float(text: str):
    value = float(text)
    return value if math.isfinite(value) else _Refused("The number is out of range.")


def _parse_constant(name: str):
    return _Refused(f"{name} is not a number this API accepts.")


def load(data: bytes | str):
    """Parse a JSON body; return the document.

    Raises BadRequest (400) when it is not UTF-8 JSON or nests deeper than MAX_DEPTH, and
    BodyRejected (422, naming the field) for an integer of more than MAX_INTEGER_DIGITS digits,
    a non-finite number, or a string (or key) that is not a sequence of Unicode scalar values.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the slow path below says what is wrong
        else:
            _check_depth(document)
            return document
    try:
        text = raw.decode("utf-8")
        document = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                              parse_constant=_parse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("The request body is not valid JSON.") from None
    except RecursionError:
        raise _too_deep() from None
    _vet(document, check_strings=_SURROGATE_ESCAPE.search(raw) is not None)
    return document


def _too_deep() -> BadRequest:
    return BadRequest(f"The request body nests deeper than {MAX_DEPTH} levels.")


def _check_depth(document) -> None:
    """Refuse nesting deeper than MAX_DEPTH, level by level, looking into containers only
    (a batch of flat objects costs one C-level type scan per object)."""
    level = [document] if type(document) in _CONTAINERS else []
    depth = 0
    while level:
        if depth >= MAX_DEPTH:
            raise _too_deep()
        nested = []
        for value in level:
            children = value.values() if type(value) is dict else value
            if not _CONTAINERS_SET.isdisjoint(map(type, children)):
                nested.extend(child for child in children if type(child) in _CONTAINERS)
        level, depth = nested, depth + 1


def _vet(document, *, check_strings: bool) -> None:
    """Walk the document once (without recursion): depth, refused numbers, invalid strings."""
    stack = [(document, (), 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                raise _too_deep()
            for key, item in value.items():
                if check_strings and not _scalar_values(key):
                    raise _rejected(document, (*path, key), "A field name is not valid Unicode text.")
                stack.append((item, (*path, key), depth + 1))
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                raise _too_deep()
            stack.extend((item, (*path, index), depth + 1) for index, item in enumerate(value))
        elif isinstance(value, _Refused):
            raise _rejected(document, path, value.reason)
        elif check_strings and isinstance(value, str) and not _scalar_values(value):
            raise _rejected(document, path, "The text is not valid Unicode (a lone surrogate).")


def _scalar_values(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _rejected(document, path: tuple, detail: str) -> BodyRejected:
    return BodyRejected(detail, field=field_name(path) or None, document=document)


def field_name(path: tuple) -> str:
    """``("readings", 3, "source_device")`` -> ``readings[3].source_device``; a key that is
    itself invalid text is shown as ``?``."""
    name = ""
    for part in path:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            part = part if _scalar_values(part) else "?"
            name += f".{part}" if name else part
    return name


class Parser(FlaskParser):
    """flask-smorest's argument parser, reading JSON bodies with ``load``."""

    def _raw_load_json(self, req):
        if not is_json_request(req):
            return core.missing
        return load(req.get_data(cache=True))


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with ``load`` for parsing, so ``request.get_json()`` is safe too,
    and orjson for writing (UUIDs, dates and times as ISO 8601 text). What orjson cannot write
    (an integer beyond 64 bits, a Decimal, a type it does not know) is written by Flask's own."""

    def loads(self, s, **kwargs):
        return load(s)

    def dumps(self, obj, **kwargs) -> str:
        try:
            return orjson.dumps(obj).decode()
        except TypeError:
            return super().dumps(obj, **kwargs)

    def response(self, *args, **kwargs):
        obj = self._prepare_response_obj(args, kwargs)
        try:
            data = orjson.dumps(obj)
        except TypeError:
            data = super().dumps(obj)
        return self._app.response_class(data, mimetype=self.mimetype)
