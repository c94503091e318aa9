"""Sign-in (POST /api/v1/auth/tokens) and its throttles, sign-out, and your sessions."""
from __future__ import annotations

from flask import request
from marshmallow import Schema, ValidationError, fields, validate
from werkzeug.exceptions import UnprocessableEntity

from clarity.api import body, problem
from clarity.api.access import roles
from clarity.api.common import Blueprint, Text, run, runtime
from clarity.errors import BadRequest, ClarityError, Invalid, Unauthorized, UnsupportedMediaType
from clarity.security.access import ADMIN
from clarity.services import auth

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Staff sign-in")


class LoginSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = Text(required=True, max_length=256)


class TokenSchema(Schema):
    token = fields.String(required=True)
    token_type = fields.String(dump_default="Bearer")
    expires_at = fields.DateTime(required=True)
    user_id = fields.UUID(required=True)


_LOGIN = LoginSchema()
_WRONG_CREDENTIALS = "Email or password is incorrect."


# The body is read here, not by @blp.arguments: a malformed sign-in is an attempt too, audited
# and counted (attributed to the account its email names), so it must reach the service.
@blp.route("/tokens", methods=["POST"])
@blp.doc(security=[], requestBody={"required": True, "content": {"application/json": {"schema": LoginSchema}}})
@blp.response(201, TokenSchema)
@blp.alt_response(401, description="Wrong email or password, or a disabled account (one answer for all).")
@blp.alt_response(429, description="Too many failed sign-ins: wait `Retry-After` seconds.",
                  headers={"Retry-After": {"description": "Seconds until the throttle lifts.",
                                           "schema": {"type": "integer", "minimum": 1}}})
def create_token():
    """Sign in with email and password; returns an opaque bearer token.

    Every attempt, a malformed one too, is audited and counts toward the sign-in throttles:
    per account and address, a backoff per account, and a limit per address (429 with
    Retry-After). 400/422 for a malformed body, 401 for a wrong email or password.
    """
    email, password, rejected = read_sign_in(request.get_data(cache=True))
    issued = run(lambda uow, _: auth.login(uow, email, password, passwords=runtime().passwords,
                                           settings=runtime().settings),
                 authenticated=False)
    if issued is None:
        raise rejected or Unauthorized(_WRONG_CREDENTIALS)
    return {**issued, "token_type": "Bearer"}


@blp.errorhandler(UnsupportedMediaType)
def _sign_in_not_json(exc):
    """A sign-in sent as something other than JSON is refused before the view (415); it is
    still an attempt, audited and counted, though nothing of it is read."""
    try:
        if request.endpoint == "auth.create_token":
            run(lambda uow, _: auth.login(uow, None, None, passwords=runtime().passwords,
                                          settings=runtime().settings),
                authenticated=False)
    except ClarityError as refused:
        exc = refused
    return problem(exc.status, exc.title, exc.detail, exc.headers, field=exc.field)


def read_sign_in(raw: bytes) -> tuple[str | None, str | None, Exception | None]:
    """``(email, password, rejected)`` from a sign-in body. ``rejected`` is the error to answer
    a malformed body with, as any route would (400 not JSON; 422 naming the field or with the
    schema's messages), and then ``password`` is None; ``email`` is what the attempt is
    attributed to: the body's email, even in a malformed body, when it could be one. The
    errors name fields, never a value."""
    try:
        document = body.load(raw)
    except body.BodyRejected as exc:
        return _attributable_email(exc.document), None, Invalid(exc.detail, field=exc.field)
    except BadRequest as exc:
        return None, None, exc
    try:
        values = _LOGIN.load(document)
    except ValidationError as exc:
        return _attributable_email(document), None, _unprocessable(exc.messages)
    return values["email"], values["password"], None


def _unprocessable(messages) -> UnprocessableEntity:
    """The 422 flask-smorest answers a body that fails its schema with (rendered with the
    messages by the API's HTTP error handler), for a view that parses its own body."""
    error = UnprocessableEntity()
    error.data = {"messages": {"json": messages}}
    return error


def _attributable_email(document) -> str | None:
    """The document's email when it could be an account's (so the attempt is attributed to
    it); None when it could not, or could not even be looked up (not text, NUL, lone
    surrogates, longer than any stored email)."""
    email = document.get("email") if isinstance(document, dict) else None
    if not isinstance(email, str) or not 3 <= len(email) <= 254 or "\x00" in email:
        return None
    try:
        email.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return email


@blp.route("/throttles/<uuid:user_id>", methods=["DELETE"])
@blp.response(204)
@roles(ADMIN)
def clear_throttle(user_id):
    """Clear an account's sign-in throttle (admin only).

    The account's failed sign-ins so far stop counting, from every address: its backoff and
    its throttles per address end at once. Audited as ``auth.throttle_clear``; 404 when there
    is no such user. A throttle of a whole address (failures against many accounts) is not
    the account's and stays until it lifts."""
    run(lambda uow, actor: auth.clear_login_throttle(uow, actor, user_id))


@blp.route("/tokens/current", methods=["DELETE"])
@blp.response(204)
def delete_current_token():
    """Sign out: the token stops working at once."""
    run(lambda uow, actor: auth.logout(uow, actor))


class SessionSchema(Schema):
    id = fields.UUID()
    created_at = fields.DateTime()
    last_used_at = fields.DateTime()
    expires_at = fields.DateTime()
    client_addr = fields.String(allow_none=True)
    current = fields.Boolean()


@blp.route("/sessions", methods=["GET"])
@blp.response(200, SessionSchema(many=True))
def list_sessions():
    """Your live sessions (tokens), most recently used first."""
    return run(lambda uow, actor: auth.list_sessions(uow, actor, settings=runtime().settings))


@blp.route("/sessions/<uuid:session_id>", methods=["DELETE"])
@blp.response(204)
def delete_session(session_id):
    """End one of your sessions at once (404 when it is not yours or already ended)."""
    run(lambda uow, actor: auth.revoke_session(uow, actor, session_id))
