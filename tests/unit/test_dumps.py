"""The compiled response dump writes what marshmallow's dump writes (clarity.api.dumps)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
import zoneinfo

import orjson
import pytest
from flask import Flask
from flask_smorest import Api
from marshmallow import Schema, fields, post_dump

from clarity.api import dumps
from clarity.api.common import Blueprint, Text
from clarity.api.patients import PatientPageSchema, PatientSchema

NOW = dt.datetime(2026, 12, 1, 23, 56, 25, 123456, tzinfo=dt.timezone.utc)
BERLIN = dt.datetime(2026, 7, 1, 9, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin"))


def patient(**overrides) -> dict:
    return {"id": uuid.uuid4(), "provider_id": uuid.uuid4(), "first_name": "Ana", "last_name": "Núñez",
            "date_of_birth": "1980-02-29", "sex": "female", "mrn": "MRN-1", "ssn": None, "email": None,
            "phone": "+1 555", "address": {"line1": "1 Main St", "line2": None, "city": "Springfield"},
            "insurance": None, "emergency_contact": {"name": "Bo", "phone": "+1 556"}, "notes": None,
            "status": "active", "version": 3, "created_at": NOW, "updated_at": NOW.replace(microsecond=0),
            "internal": "never sent", **overrides}


@dataclasses.dataclass
class Row:
    id: uuid.UUID
    when: dt.datetime
    day: dt.date
    count: int
    ratio: float
    ok: bool
    tags: list
    extra: dict
    label: str = "L-1"


class RowSchema(Schema):
    id = fields.UUID()
    when = fields.DateTime()
    day = fields.Date()
    count = fields.Integer()
    ratio = fields.Float()
    ok = fields.Boolean()
    tags = fields.List(Text())
    extra = fields.Dict()
    renamed = fields.String(attribute="label", data_key="ref")


@pytest.mark.parametrize("schema, value", [
    (PatientSchema(), patient()),
    (PatientSchema(), patient(address=None, emergency_contact=None)),
    (PatientSchema(), {"id": uuid.uuid4(), "status": "active"}),  # missing keys are left out
    (PatientSchema(many=True), [patient(), patient(version=1)]),
    (PatientPageSchema(), {"items": [patient()], "next_cursor": None}),
    (RowSchema(), Row(uuid.uuid4(), NOW, NOW.date(), 2, 0.5, True, ["a", "b"], {"k": [1, 2]})),
    (RowSchema(), Row(uuid.uuid4(), NOW, NOW.date(), True, 1, False, [], {})),  # bool as int, int as float
    (RowSchema(many=True), []),
    (RowSchema(), Row(uuid.uuid4(), BERLIN, BERLIN.date(), 0, 0.0, True, [], {})),  # an offset, no microseconds
    (RowSchema(), Row(str(uuid.uuid4()), NOW.replace(tzinfo=None), NOW.date(), 1, 2.5, False, ["x"], {})),  # naive
])
def test_the_compiled_dump_writes_what_marshmallow_writes(schema, value):
    assert orjson.dumps(dumps.compile_dump(schema)(value)) == orjson.dumps(schema.dump(value))


def test_undeclared_keys_are_never_written():
    written = dumps.compile_dump(PatientSchema())(patient())
    assert "internal" not in written and set(written) == set(PatientSchema().dump_fields)


def test_schemas_with_what_it_does_not_write_keep_marshmallows_dump():
    class Hooked(Schema):
        a = fields.String()

        @post_dump
        def upper(self, data, **kwargs):
            return {k: v.upper() for k, v in data.items()}

    class Computed(Schema):
        a = fields.Function(lambda obj: obj["a"] * 2)

    for schema in (Hooked(), Computed()):
        assert dumps.compile_dump(schema) == schema.dump
        assert dumps.compile_dump(schema)({"a": "x"}) == schema.dump({"a": "x"})


def test_the_check_fails_a_response_the_two_dumps_disagree_on(monkeypatch):
    monkeypatch.setattr(dumps, "compile_dump", lambda schema: lambda obj: {"id": "tampered"})
    app = Flask(__name__)
    app.testing = True
    app.config.update(API_TITLE="t", API_VERSION="1", OPENAPI_VERSION="3.0.3", CLARITY_CHECK_DUMPS=True)
    blp = Blueprint("t", __name__)

    @blp.route("/x")
    @blp.response(200, PatientSchema)
    def view():
        return patient()

    Api(app).register_blueprint(blp)
    with pytest.raises(AssertionError, match="PatientSchema"):
        app.test_client().get("/x")
    app.config["CLARITY_CHECK_DUMPS"] = False
    assert app.test_client().get("/x").json == {"id": "tampered"}
