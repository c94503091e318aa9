"""Staff users and their bearer tokens."""
from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from psycopg.rows import class_row, dict_row


@dataclasses.dataclass(frozen=True)
class User:
    id: uuid.UUID
    email: str
    display_name: str
    role: str
    disabled_at: dt.datetime | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclasses.dataclass(frozen=True)
class Credentials:
    id: uuid.UUID
    role: str
    password_hash: str
    disabled_at: dt.datetime | None


class UserRepository:
    def __init__(self, conn, queries):
        self.conn = conn
        self.q = queries

    def get(self, user_id) -> User | None:
        return self.q.get_user.one(self.conn, {"id": user_id}, class_row(User))

    def get_credentials(self, email: str) -> Credentials | None:
        return self.q.get_user_credentials.one(self.conn, {"email": email}, class_row(Credentials))

    def get_password_hash(self, user_id) -> str | None:
        return self.q.get_user_password_hash.value(self.conn, {"id": user_id})

    def list(self, *, after: tuple | None, limit: int) -> list[User]:
        after_created_at, after_id = after or (None, None)
        return self.q.list_users.all(self.conn, {
            "after_created_at": after_created_at, "after_id": after_id, "limit": limit,
        }, class_row(User))

    def add(self, *, email, display_name, role, password_hash) -> User:
        return self.q.insert_user.one(self.conn, {
            "id": uuid.uuid4(), "email": email, "display_name": display_name,
            "role": role, "password_hash": password_hash,
        }, class_row(User))

    def update(self, user_id, version, *, display_name=None, role=None, password_hash=None,
               disabled=None) -> User | None:
        """Apply the non-None changes when ``version`` matches; None when it does not (or no user)."""
        return self.q.update_user.one(self.conn, {
            "id": user_id, "version": version, "display_name": display_name, "role": role,
            "password_hash": password_hash, "disabled": disabled,
        }, class_row(User))

    def change_password(self, user_id, password_hash) -> None:
        """Store a new password's hash (a real change: bumps the version)."""
        self.q.update_user_password.rowcount(self.conn, {"id": user_id, "password_hash": password_hash})

    def set_password_hash(self, user_id, password_hash) -> None:
        self.q.update_user_password_hash.rowcount(self.conn, {"id": user_id, "password_hash": password_hash})


class TokenRepository:
    def __init__(self, conn, queries):
        self.conn = conn
        self.q = queries

    def add(self, *, user_id, token_hash: bytes, max_age_seconds: int, client_addr) -> dict:
        return self.q.insert_token.one(self.conn, {
            "user_id": user_id, "token_hash": token_hash,
            "max_age_seconds": max_age_seconds, "client_addr": client_addr,
        }, dict_row)

    def get_actor(self, token_hash: bytes, *, idle_seconds: int, request_id: str | None) -> dict | None:
        """The live token's user (and set the transaction's actor context), or None."""
        return self.q.get_token_actor.one(self.conn, {
            "token_hash": token_hash, "idle_seconds": idle_seconds, "request_id": request_id or "",
        }, dict_row)

    def list_for_user(self, user_id, *, idle_seconds: int) -> list[dict]:
        """The user's live sessions, most recently used first."""
        return self.q.list_tokens_for_user.all(self.conn, {"user_id": user_id, "idle_seconds": idle_seconds}, dict_row)

    def revoke_own(self, token_id, user_id) -> bool:
        """Revoke one of the user's own tokens; False when it is not theirs or already dead."""
        return self.q.revoke_own_token.rowcount(self.conn, {"id": token_id, "user_id": user_id}) == 1

    def revoke(self, token_id) -> bool:
        return self.q.revoke_token.rowcount(self.conn, {"id": token_id}) == 1

    def revoke_all_for_user(self, user_id) -> int:
        return self.q.revoke_all_user_tokens.rowcount(self.conn, {"user_id": user_id})
