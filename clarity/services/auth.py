"""Staff authentication: login, bearer-token checks, logout."""
from __future__ import annotations

from clarity.audit import EXECUTE, AuditEvent
from clarity.errors import Invalid, NotFound, TooManyRequests, Unauthorized
from clarity.security.access import Actor, new_token, token_digest


def login(uow, email: str, password: str, *, passwords, settings) -> dict:
    """Check the password and issue a token: ``{"token", "expires_at", "user_id"}``.

    Raises TooManyRequests when the account or the client address has failed too often
    within the window (checked before the password, so a locked account stays locked), and
    Unauthorized when the email or password is wrong or the account is disabled. Every
    attempt is audited, the failed ones too.
    """
    creds = uow.users.get_credentials(email)
    user_id = creds.id if creds else None
    event = AuditEvent(EXECUTE, "auth.login", "user", user_id, actor_id=user_id)
    uow.audit(event)
    failures = uow.audit_events.count_login_failures(
        user_id=user_id, client_addr=uow.client_addr,
        window_seconds=settings.login_failure_window_seconds)
    if (failures["account_failures"] >= settings.login_max_failures
            or failures["address_failures"] >= settings.login_max_failures_per_address):
        raise TooManyRequests(retry_after=settings.login_failure_window_seconds)
    usable = creds is not None and creds.disabled_at is None
    if not passwords.verify(creds.password_hash if usable else None, password):
        raise Unauthorized("Email or password is incorrect.")
    if passwords.needs_rehash(creds.password_hash):
        uow.users.set_password_hash(creds.id, passwords.hash(password))
    token, digest = new_token()
    issued = uow.tokens.add(user_id=creds.id, token_hash=digest,
                            max_age_seconds=settings.token_max_age_hours * 3600,
                            client_addr=uow.client_addr)
    return {"token": token, "expires_at": issued["expires_at"], "user_id": creds.id}


def authenticate(uow, token: str | None, *, settings) -> Actor:
    """The actor behind a live bearer token; also sets the transaction's actor context.

    Raises Unauthorized when the token is missing, unknown, revoked, idle too long, past its
    absolute age, or its user is disabled.
    """
    if not token:
        raise Unauthorized()
    row = uow.tokens.get_actor(token_digest(token), idle_seconds=settings.token_idle_minutes * 60,
                               request_id=uow.request_id)
    if row is None:
        raise Unauthorized("The bearer token is invalid or has expired.")
    actor = Actor(id=row["user_id"], role=row["role"], token_id=row["token_id"])
    uow.actor = actor
    return actor


def logout(uow, actor: Actor) -> None:
    """Revoke the token the actor authenticated with, effective at once."""
    uow.tokens.revoke(actor.token_id)
    uow.audit(AuditEvent(EXECUTE, "auth.logout", "user", actor.id))


def list_sessions(uow, actor: Actor, *, settings) -> list[dict]:
    """The actor's live sessions, each marked ``current`` when it is the one in use."""
    sessions = uow.tokens.list_for_user(actor.id, idle_seconds=settings.token_idle_minutes * 60)
    return [{**s, "current": s["id"] == actor.token_id} for s in sessions]


def revoke_session(uow, actor: Actor, session_id) -> None:
    """End one of the actor's own sessions at once; NotFound when it is not theirs or already ended."""
    uow.audit(AuditEvent(EXECUTE, "auth.session_revoke", "session", session_id))
    if not uow.tokens.revoke_own(session_id, actor.id):
        raise NotFound("No such session.")


def change_password(uow, actor: Actor, current_password: str, new_password: str, *, passwords) -> None:
    """Change the actor's own password; every session of theirs ends, the current one too.
    Raises Invalid (field current_password) when the current password is wrong."""
    uow.audit(AuditEvent(EXECUTE, "user.password_change", "user", actor.id, fields=("password",)))
    if not passwords.verify(uow.users.get_password_hash(actor.id), current_password):
        raise Invalid("The current password is incorrect.", field="current_password")
    uow.users.change_password(actor.id, passwords.hash(new_password))
    uow.tokens.revoke_all_for_user(actor.id)
