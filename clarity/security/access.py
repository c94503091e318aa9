"""Who is acting, and what their role lets them do."""
from __future__ import annotations

import dataclasses
import hashlib
import secrets
import uuid

from clarity.errors import Forbidden

ADMIN, PROVIDER, AUDITOR = "admin", "provider", "auditor"
ROLES = (ADMIN, PROVIDER, AUDITOR)
PHI_ROLES = (ADMIN, PROVIDER)


@dataclasses.dataclass(frozen=True)
class Actor:
    id: uuid.UUID
    role: str
    token_id: uuid.UUID | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    def scope(self) -> dict:
        """SQL parameters that scope a query to what this actor may see."""
        return {"actor_id": self.id, "actor_is_admin": self.is_admin}


def require_role(actor: Actor, *roles: str) -> None:
    """Raise Forbidden when the actor's role lacks the function."""
    if actor.role not in roles:
        raise Forbidden("Your role does not allow this action.")


def new_token() -> tuple[str, bytes]:
    """A new opaque bearer token and the SHA-256 digest that is all the database keeps."""
    token = secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
