"""The OpenAPI document says what the API does: errors are application/problem+json, and the
precondition headers a route reads are declared on it."""
from __future__ import annotations

import http

from apispec import BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from marshmallow import Schema, fields

from clarity.api.common import ENTITY_TAGS
from clarity.api.idempotency import HEADER, MAX_KEY_LENGTH, PUT_ENDPOINTS

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


class _IdempotencyKeyPlugin(BasePlugin):
    """Declares the ``Idempotency-Key`` header on every operation it covers (clarity.api.idempotency:
    a signed-in POST, and the PUTs it names)."""

    def operation_helper(self, path=None, operations=None, rule=None, **kwargs):
        for method, operation in (operations or {}).items():
            signed_in = operation.get("security") != []
            if (method == "post" and signed_in) or (method == "put" and rule is not None
                                                    and rule.endpoint in PUT_ENDPOINTS):
                operation.setdefault("parameters", []).append({
                    "in": "header", "name": HEADER, "required": False,
                    "schema": {"type": "string", "maxLength": MAX_KEY_LENGTH + 2},
                    "description": (
                        'A retry with the same key (a quoted string: "8e03978e-…", 1 to 255 visible ASCII '
                        "characters) gets the first answer again (Idempotent-Replayed: true) instead of a "
                        "second write; 400 malformed, 409 while its first request runs, 422 with another "
                        "request.")})


class ClarityApi(Api):
    """flask-smorest's Api, documenting every error response as problem+json, the rules a
    schema states in ``Meta.openapi`` and the Idempotency-Key header."""

    ERROR_SCHEMA = ProblemSchema

    def __init__(self, app=None, **kwargs):
        super().__init__(app, spec_kwargs={"marshmallow_plugin": _MarshmallowPlugin(),
                                           "extra_plugins": [_IdempotencyKeyPlugin()]}, **kwargs)

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
