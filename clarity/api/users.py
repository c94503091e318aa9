"""Staff users: /api/v1/users (admin) and /api/v1/users/me."""
from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from clarity.api.access import roles
from clarity.api.openapi import if_match
from clarity.api.common import (Blueprint, Text, cursor_field, decode_cursor, etag, if_match_version, limit_field,
                                next_link, run, runtime)
from clarity.security.access import ADMIN, ROLES
from clarity.services import auth, users

blp = Blueprint("users", __name__, url_prefix="/api/v1/users", description="Staff users")

Password = lambda **kw: Text(min_length=12, max_length=256, load_only=True, **kw)  # noqa: E731


class UserSchema(Schema):
    id = fields.UUID(dump_only=True)
    email = fields.Email(dump_only=True)
    display_name = fields.String(dump_only=True)
    role = fields.String(dump_only=True)
    disabled = fields.Boolean(dump_only=True)
    version = fields.Integer(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class UserCreateSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    display_name = Text(required=True, max_length=200)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    password = Password(required=True)


class UserUpdateSchema(Schema):
    class Meta:
        openapi = {"minProperties": 1}

    display_name = Text(max_length=200)
    role = fields.String(validate=validate.OneOf(ROLES))
    password = Password()
    disabled = fields.Boolean()

    @validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError("Send at least one field to change.")


class PasswordChangeSchema(Schema):
    current_password = Text(required=True, max_length=256, load_only=True)
    new_password = Password(required=True)


class UserListArgs(Schema):
    limit = limit_field(strict=False)
    cursor = cursor_field()


@blp.route("/me", methods=["GET"])
@blp.response(200, UserSchema)
def get_me():
    """The signed-in user."""
    user = run(lambda uow, actor: users.get_me(uow, actor))
    return user, 200, etag(user.version)


@blp.route("/me/password", methods=["POST"])
@blp.arguments(PasswordChangeSchema)
@blp.response(204)
def change_my_password(body):
    """Change your password. Every session of yours ends, this one too: sign in again."""
    run(lambda uow, actor: auth.change_password(uow, actor, body["current_password"], body["new_password"],
                                                passwords=runtime().passwords))


@blp.route("", methods=["GET"])
@blp.arguments(UserListArgs, location="query", unknown=RAISE)
@blp.response(200, UserSchema(many=True))
@roles(ADMIN)
def list_users(args):
    """All staff users, in creation order (admin only); next page in the Link header."""
    after = decode_cursor(args["cursor"])
    page, next_after = run(lambda uow, actor: users.list_users(uow, actor, after=after, limit=args["limit"]))
    return page, 200, next_link(next_after)


@blp.route("", methods=["POST"])
@blp.arguments(UserCreateSchema)
@blp.response(201, UserSchema)
@roles(ADMIN)
def create_user(body):
    """Create a staff user (admin only). 409 when the email is taken."""
    user = run(lambda uow, actor: users.create_user(uow, actor, passwords=runtime().passwords, **body))
    return user, 201, {"Location": f"/api/v1/users/{user.id}", **etag(user.version)}


@blp.route("/<uuid:user_id>", methods=["PATCH"])
@blp.arguments(UserUpdateSchema)
@blp.response(200, UserSchema)
@blp.doc(parameters=[if_match()])
@roles(ADMIN)
def update_user(body, user_id):
    """Change a user's name, role or password, or disable them (admin only; If-Match).

    Disabling a user, changing their role or setting their password ends their sessions."""
    version = if_match_version()
    user = run(lambda uow, actor: users.update_user(uow, actor, user_id, version, body,
                                                    passwords=runtime().passwords))
    return user, 200, etag(user.version)
