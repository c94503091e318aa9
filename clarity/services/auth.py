"""Staff authentication: sign-in and its throttles, bearer-token checks, logout, sessions."""
from __future__ import annotations

import math

from clarity import metrics
from clarity.audit import EXECUTE, AuditEvent
from clarity.errors import Invalid, NotFound, TooManyRequests, Unauthorized
from clarity.repositories.audit import LoginThrottle
from clarity.security.access import ADMIN, Actor, new_token, require_role, token_digest


def login(uow, email: str | None, password: str | None, *, passwords, settings) -> dict | None:
    """Sign in: check the throttles, then the password; issue a token.

    ``email`` is None when the request named nothing that could be an account's email, and
    ``password`` None when the request was malformed: the attempt is still audited (attributed
    to the account its email names, if any) and counted as a failure.

    Returns ``{"token", "expires_at", "user_id"}``, or None when the attempt failed (unknown
    email, wrong password, disabled account, malformed request). A failure is not raised: it
    must commit with this unit, while the lock on the email is held, so the next attempt on
    the account counts it (a raised error would roll back, releasing the lock, and only then
    write the event).

    Raises TooManyRequests, before the password is looked at, while a throttle holds (see
    ``throttle_wait``), with Retry-After the seconds until every throttle that holds lifts.
    That attempt is audited as denied and does not count as a failure, so retrying early
    never prolongs a throttle.
    """
    creds = None
    if email is not None:
        uow.audit_events.lock_login_email(email)
        creds = uow.users.get_credentials(email)
    user_id = creds.id if creds else None
    event = AuditEvent(EXECUTE, "auth.login", "user", user_id, actor_id=user_id)
    uow.audit(event)
    wait = throttle_wait(uow.audit_events.get_login_throttle(
        user_id=user_id, client_addr=uow.client_addr,
        window_seconds=settings.login_failure_window_seconds,
        account_window_seconds=settings.login_account_window_seconds,
        familiar_seconds=settings.login_familiar_address_days * 86400,
        max_per_pair=settings.login_max_failures_per_pair,
        max_per_address=settings.login_max_failures_per_address), settings)
    if wait:
        metrics.count_sign_in("throttled")
        raise TooManyRequests(retry_after=wait)
    usable = creds is not None and creds.disabled_at is None
    if password is None or not passwords.verify(creds.password_hash if usable else None, password):
        event.outcome = "failure"
        metrics.count_sign_in("failure")
        return None
    if passwords.needs_rehash(creds.password_hash):
        uow.users.set_password_hash(creds.id, passwords.hash(password))
    token, digest = new_token()
    issued = uow.tokens.add(user_id=creds.id, token_hash=digest,
                            max_age_seconds=settings.token_max_age_hours * 3600,
                            client_addr=uow.client_addr)
    metrics.count_sign_in("success")
    return {"token": token, "expires_at": issued["expires_at"], "user_id": creds.id}


def throttle_wait(throttle: LoginThrottle, settings) -> int:
    """Whole seconds until every sign-in throttle that holds for an attempt lifts; 0 when none
    holds. The throttles:

    - the address: ``login_max_failures_per_address`` failures from it within the window
      (credential stuffing: one address failing against many accounts);
    - the pair: ``login_max_failures_per_pair`` failures of this account from this address
      within the window, so a guesser (or a user who forgot their password) is stopped
      without touching the account's other addresses;
    - the account's backoff, for guessing spread over many addresses: from the
      ``login_account_backoff_after``-th failure on, an attempt must come 1 s after the last
      failure, doubling with each further failure up to ``login_account_backoff_max_seconds``.
      An address the account signed in from recently is exempt, so an attack from elsewhere
      never slows its owner at their usual place.
    """
    waits = [throttle.address_retry_after, throttle.pair_retry_after]
    if not throttle.familiar:
        waits.append(account_backoff_wait(throttle.account_failures, throttle.account_failure_age,
                                          after=settings.login_account_backoff_after,
                                          max_seconds=settings.login_account_backoff_max_seconds))
    return max((math.ceil(wait) for wait in waits if wait is not None and wait > 0), default=0)


def account_backoff_wait(failures: int, seconds_since_last: float | None, *, after: int,
                         max_seconds: int) -> float | None:
    """Seconds the account's backoff still asks for (<= 0: it has passed); None below ``after``
    failures. The delay after the last failure is 1 s at ``after`` failures and doubles with
    each one more, capped at ``max_seconds``."""
    if failures < after or seconds_since_last is None:
        return None
    delay = min(max_seconds, 2 ** min(failures - after, 32))
    return delay - seconds_since_last


def clear_login_throttle(uow, actor: Actor, user_id) -> None:
    """Restart the account's throttle counts (admin only): its failures so far stop counting
    toward its backoff and its pair throttles. The audit event (auth.throttle_clear) is the
    clear itself: the counts start after it. The address throttle is not the account's and
    stays. Raises Forbidden, NotFound (no such user)."""
    uow.audit(AuditEvent(EXECUTE, "auth.throttle_clear", "user", user_id))
    require_role(actor, ADMIN)
    if uow.users.get(user_id) is None:
        raise NotFound("No such user.")


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
