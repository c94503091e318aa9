"""Response bodies written from the response schema, without marshmallow's per-field machinery.

A response schema documents the body (OpenAPI) and decides what of a view's result is sent:
only its declared fields, each in its declared form. ``compile_dump`` turns a schema into a
plain function that picks exactly those fields, for the field kinds the API uses (text,
numbers, booleans, UUIDs, dates and times, lists, nested schemas, plain dicts). UUIDs, dates
and times are left for orjson, which writes them as marshmallow would (canonical UUID text, ISO
8601), so the JSON is the same while a page of 50 patients costs a tenth of marshmallow's dump.

The function is generated as straight-line Python, one assignment per field (see ``_source``):
a loop over the fields costs as much again. A schema with anything else (a Method or Function
field, a dump hook, a dotted attribute, a default) keeps marshmallow's own dump.

With ``app.config["CLARITY_CHECK_DUMPS"]`` set (the test suite sets it), every response is
written both ways and different JSON is an error, so every API test checks that they agree.
"""
from __future__ import annotations

from collections.abc import Mapping

from marshmallow import Schema, fields, missing

_MISSING = object()


class _Unsupported(Exception):
    """A field or schema this module does not write; the schema keeps marshmallow's dump."""


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _expression(field: fields.Field, env: dict, name: str, value: str = "v") -> str:
    """A Python expression writing the non-None ``value`` of ``field`` (``name`` is free for
    helpers in ``env``)."""
    if field.dump_default is not missing or (field.attribute and "." in field.attribute):
        raise _Unsupported
    kind = type(field)
    if isinstance(field, fields.Nested):
        env[name] = _compile(field.schema, many=field.schema.many or field.many)
        return f"{name}({value})"
    if kind is fields.List:
        inner = _expression(field.inner, env, f"{name}_", "x")
        return f"[None if x is None else {inner} for x in {value}]"
    if kind in (fields.DateTime, fields.AwareDateTime, fields.NaiveDateTime, fields.Date):
        if (field.format or field.DEFAULT_FORMAT) not in ("iso", "iso8601"):
            raise _Unsupported
        return value  # orjson writes dates and times in ISO 8601, as isoformat() does
    if kind is fields.UUID or kind is fields.Boolean or (
            kind is fields.Dict and field.key_field is None and field.value_field is None):
        return value
    if isinstance(field, fields.String) and type(field)._serialize is fields.String._serialize:
        return f"{value} if type({value}) is str else _text({value})"
    if kind is fields.Integer and not field.as_string:
        return f"{value} if type({value}) is int else int({value})"
    if kind is fields.Float and not field.as_string:
        return f"{value} if type({value}) is float else float({value})"
    raise _Unsupported


def _source(schema: Schema, env: dict) -> str:
    """The function writing one object: for each field, take the value (a key of a mapping, an
    attribute otherwise), leave it out when absent, write None as null and anything else with
    its field's expression."""
    lines = ["def one(obj):",
             "    if type(obj) is dict or isinstance(obj, Mapping):",
             "        get = obj.get",
             "    else:",
             "        def get(name, absent):",
             "            return getattr(obj, name, absent)",
             "    out = {}"]
    for index, (name, field) in enumerate(schema.dump_fields.items()):
        expression = _expression(field, env, f"f{index}")
        lines += [f"    v = get({field.attribute or name!r}, _MISSING)",
                  "    if v is not _MISSING:",
                  f"        out[{field.data_key or name!r}] = None if v is None else {expression}"]
    return "\n".join([*lines, "    return out"])


def _compile(schema: Schema, *, many: bool):
    if schema._hooks.get("pre_dump") or schema._hooks.get("post_dump"):
        raise _Unsupported
    env = {"Mapping": Mapping, "_MISSING": _MISSING, "_text": _text}
    exec(compile(_source(schema, env), f"<dump of {type(schema).__name__}>", "exec"), env)
    one = env["one"]
    if many:
        return lambda objs: [one(obj) for obj in objs]
    return one


def compile_dump(schema: Schema):
    """A function writing what ``schema.dump`` writes (UUIDs, dates and times left for orjson),
    or ``schema.dump`` itself when the schema holds something this module does not write."""
    try:
        return _compile(schema, many=schema.many)
    except _Unsupported:
        return schema.dump
