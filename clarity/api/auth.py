"""POST /api/v1/auth/tokens (login) and DELETE /api/v1/auth/tokens/current (logout)."""
from __future__ import annotations

from flask_smorest import Blueprint
from marshmallow import Schema, fields

from clarity.api.common import Text, clarity, run
from clarity.services import auth

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Staff sign-in")


class LoginSchema(Schema):
    email = fields.Email(required=True, validate=lambda v: len(v) <= 254)
    password = Text(required=True, max_length=256)


class TokenSchema(Schema):
    token = fields.String(required=True)
    token_type = fields.String(dump_default="Bearer")
    expires_at = fields.DateTime(required=True)
    user_id = fields.UUID(required=True)


@blp.route("/tokens", methods=["POST"])
@blp.arguments(LoginSchema)
@blp.response(201, TokenSchema)
@blp.doc(security=[])
def create_token(body):
    """Sign in with email and password; returns an opaque bearer token.

    Failed attempts are audited and rate-limited per account and per client address (429).
    """
    app = clarity()
    issued = run(lambda uow, _: auth.login(uow, body["email"], body["password"],
                                           passwords=app.passwords, settings=app.settings),
                 authenticated=False)
    return {**issued, "token_type": "Bearer"}


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
    settings = clarity().settings
    return run(lambda uow, actor: auth.list_sessions(uow, actor, settings=settings))


@blp.route("/sessions/<uuid:session_id>", methods=["DELETE"])
@blp.response(204)
def delete_session(session_id):
    """End one of your sessions at once (404 when it is not yours or already ended)."""
    run(lambda uow, actor: auth.revoke_session(uow, actor, session_id))
