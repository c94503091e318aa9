"""The OpenAPI document says what the API does: errors are application/problem+json, and the
precondition headers a route reads are declared on it."""
from __future__ import annotations

import http

from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from marshmallow import Schema, fields

from clarity.api.common import ENTITY_TAGS

PROBLEM_JSON = "application/problem+json"


class ProblemSchema(Schema):
    """RFC 9457 problem details, as every error of this API is answered."""

    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    instance = fields.String(required=True)
    request_id = fields.String(allow_none=True)
    field = fields.String(metadata={"description": "the request field the problem is about"})
    errors = fields.Dict(metadata={"description": "validation messages by location and field"})


class _Converter(OpenAPIConverter):
    """Adds a schema's ``Meta.openapi`` (rules across fields, such as ``minProperties`` or
    ``anyOf`` of required fields) to its JSON schema."""

    def schema2jsonschema(self, schema):
        jsonschema = super().schema2jsonschema(schema)
        jsonschema.update(getattr(getattr(schema, "Meta", None), "openapi", {}))
        return jsonschema


class _MarshmallowPlugin(MarshmallowPlugin):
    Converter = _Converter


class ClarityApi(Api):
    """flask-smorest's Api, documenting every error response as problem+json and the rules a
    schema states in ``Meta.openapi``."""

    ERROR_SCHEMA = ProblemSchema

    def __init__(self, app=None, **kwargs):
        super().__init__(app, spec_kwargs={"marshmallow_plugin": _MarshmallowPlugin()}, **kwargs)

    def _register_responses(self):
        for status in http.HTTPStatus:
            response = {"description": status.phrase}
            if not 100 <= status < 200 and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_JSON)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "An error (problem details)", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_JSON)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)


def if_match(*, required: bool = True) -> dict:
    """The If-Match header parameter, for ``@blp.doc(parameters=[if_match()])``: the ETag the
    change was based on (428 when a required one is missing, 412 when stale)."""
    return {"in": "header", "name": "If-Match", "required": required,
            "schema": {"type": "string", "pattern": ENTITY_TAGS.pattern},
            "description": "The ETag you read; "
                           + ("required (428 without it, 412 when stale)" if required
                              else "send it to replace (412 when stale), leave it out to create")}


def any_of_required(*names: str) -> dict:
    """``Meta.openapi`` for "send at least one of these fields"."""
    return {"anyOf": [{"required": [name], "properties": {name: {"not": {"enum": [None]}}}} for name in names]}
