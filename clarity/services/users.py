"""Staff users: the admin's management functions and a user's view of themself."""
from __future__ import annotations

from clarity.audit import CREATE, READ, UPDATE, AuditEvent
from clarity.errors import NotFound, PreconditionFailed
from clarity.pagination import keyset, page
from clarity.security.access import ADMIN, Actor, require_role


def get_me(uow, actor: Actor):
    user = uow.users.get(actor.id)
    if user is None:
        raise NotFound("No such user.")
    return user


def create_user(uow, actor: Actor, *, email, display_name, role, password, passwords):
    """Create a staff user (admin only); Conflict naming ``email`` when it is taken."""
    event = AuditEvent(CREATE, "user.create", "user", fields=("email", "display_name", "role", "password"))
    uow.audit(event)
    require_role(actor, ADMIN)
    user = uow.users.add(email=email, display_name=display_name, role=role,
                         password_hash=passwords.hash(password))
    event.entity_id = user.id
    return user


def list_users(uow, actor: Actor, *, after=None, limit: int = 50):
    """A keyset page of staff users in creation order (admin only): ``(users, next_after)``,
    the latter None on the last page."""
    uow.audit(AuditEvent(READ, "user.list", "user"))
    require_role(actor, ADMIN)
    return page(uow.users.list(after=after, limit=limit + 1), limit, keyset("created_at", "id"))


def update_user(uow, actor: Actor, user_id, version: int, changes: dict, *, passwords):
    """Change a user (admin only) when ``version`` matches.

    ``changes`` may hold display_name, role, password and disabled. Disabling a user or
    setting a password revokes every token the user holds, at once. Raises NotFound,
    PreconditionFailed (stale version).
    """
    uow.audit(AuditEvent(UPDATE, "user.update", "user", user_id, fields=tuple(changes)))
    require_role(actor, ADMIN)
    current = uow.users.get(user_id)
    if current is None:
        raise NotFound("No such user.")
    if current.version != version:
        raise PreconditionFailed("The user has changed since you read it; fetch it again.")
    password = changes.get("password")
    updated = uow.users.update(
        user_id, version, display_name=changes.get("display_name"), role=changes.get("role"),
        password_hash=passwords.hash(password) if password else None,
        disabled=changes.get("disabled"))
    if updated is None:
        raise PreconditionFailed("The user has changed since you read it; fetch it again.")
    if password or changes.get("disabled") or changes.get("role") not in (None, current.role):
        uow.tokens.revoke_all_for_user(user_id)
    return updated


def seed_user(uow, *, email, role, password, passwords):
    """Create a user, or reset an existing one's password and role (development seeding)."""
    creds = uow.users.get_credentials(email)
    if creds is None:
        return uow.users.add(email=email, display_name=f"Demo {role}", role=role,
                             password_hash=passwords.hash(password))
    user = uow.users.get(creds.id)
    return uow.users.update(user.id, user.version, role=role, password_hash=passwords.hash(password),
                            disabled=False)
