"""Response bodies written from the response schema, without marshmallow's per-field machinery.

A response schema documents the body (OpenAPI) and decides what of a view's result is sent:
only its declared fields, each in its declared form. ``compile_dump`` turns a schema into a
plain function that does exactly that for the fields the API uses (text, numbers, booleans,
UUIDs, dates and times, lists, nested schemas, plain dicts) at a fraction of the cost: a page
of 50 patients costs about 0.1 ms instead of 0.9. A schema with anything else (a Method or
Function field, a dump hook, a dotted attribute, a default) keeps marshmallow's own dump.

With ``app.config["CLARITY_CHECK_DUMPS"]`` set (the test suite sets it), every response is
dumped both ways and a difference is an error, so every API test checks the two agree.
"""
from __future__ import annotations

from collections.abc import Mapping

from marshmallow import Schema, fields, missing

_MISSING = object()


def _text(value):
    return value if type(value) is str else str(value.decode("utf-8") if isinstance(value, bytes) else value)


def _integer(value):
    return value if type(value) is int else int(value)


def _float(value):
    return value if type(value) is float else float(value)


def _iso(value):
    return value.isoformat()


def _uuid(value):
    return str(value)


def _plain_dict(value):
    return dict(value)


class _Unsupported(Exception):
    """A field or schema this module does not write; the schema keeps marshmallow's dump."""


def _converter(field: fields.Field):
    """The function that writes one non-None value of ``field``, or None for as-is."""
    if field.dump_default is not missing or (field.attribute and "." in field.attribute):
        raise _Unsupported
    kind = type(field)
    if isinstance(field, fields.Nested):
        return _compile(field.schema, many=field.schema.many or field.many)
    if kind is fields.List:
        inner = _converter(field.inner)
        return (lambda value: list(value)) if inner is None else (lambda value: [
            None if item is None else inner(item) for item in value])
    if isinstance(field, fields.DateTime) and not isinstance(field, (fields.Date, fields.Time)):
        if (field.format or field.DEFAULT_FORMAT) not in ("iso", "iso8601"):
            raise _Unsupported
        return _iso
    if kind is fields.Date:
        if (field.format or field.DEFAULT_FORMAT) not in ("iso", "iso8601"):
            raise _Unsupported
        return _iso
    if kind is fields.UUID:
        return _uuid
    if isinstance(field, fields.String) and type(field)._serialize is fields.String._serialize:
        return _text
    if kind is fields.Integer and not field.as_string:
        return _integer
    if kind is fields.Float and not field.as_string:
        return _float
    if kind is fields.Boolean:
        return None
    if kind is fields.Dict and field.key_field is None and field.value_field is None:
        return _plain_dict
    raise _Unsupported


def _compile(schema: Schema, *, many: bool):
    if schema._hooks.get("pre_dump") or schema._hooks.get("post_dump"):
        raise _Unsupported
    plan = [(field.data_key or name, field.attribute or name, _converter(field))
            for name, field in schema.dump_fields.items()]

    def one(obj) -> dict:
        if type(obj) is dict or isinstance(obj, Mapping):
            values = [(key, obj.get(attr, _MISSING), convert) for key, attr, convert in plan]
        else:
            values = [(key, getattr(obj, attr, _MISSING), convert) for key, attr, convert in plan]
        return {key: value if value is None or convert is None else convert(value)
                for key, value, convert in values if value is not _MISSING}

    if many:
        return lambda objs: [one(obj) for obj in objs]
    return one


def compile_dump(schema: Schema):
    """A function writing what ``schema.dump`` writes, or ``schema.dump`` itself when the schema
    holds something this module does not write."""
    try:
        return _compile(schema, many=schema.many)
    except _Unsupported:
        return schema.dump
