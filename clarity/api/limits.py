"""API rate limits (OWASP API4) with flask-limiter on Redis, shared by every worker and instance.

An authenticated request counts against its principal (after the token check, so one flooding
account never slows its colleagues behind the same NAT address); an anonymous one (sign-in)
against its client address. Expensive routes (searches, lists that scan, batch ingest) cost
more than a single read. Keys hold a digest of the user id or address, never a token, an email
or PHI. When Redis is unreachable, limiting falls back to a per-process in-memory limit, logged
once; a request never fails because Redis is down.
"""
from __future__ import annotations

import hashlib

from flask import current_app, g, request
from flask_limiter import Limiter

from clarity import metrics
from clarity.api.access import PUBLIC_BLUEPRINTS
from clarity.api.common import runtime

REDIS_TIMEOUT_SECONDS = 0.25


def expensive(view):
    """Mark a view as costing ``CLARITY_RATE_LIMIT_EXPENSIVE_COST`` requests of the limit."""
    view.clarity_expensive = True
    return view


def init_app(app, settings) -> Limiter:
    """Build the limiter and register its check as a before_request hook: call it where the
    check belongs in the order of hooks (after authentication, before the role check)."""
    storage, options = _storage(settings.redis_url)
    limiter = Limiter(
        key_func=_key,
        app=app,
        # Application-wide: one budget per principal (or address) across every route.
        application_limits=[_limit],
        application_limits_cost=_cost,
        application_limits_exempt_when=_exempt,
        storage_uri=storage,
        storage_options=options,
        strategy="sliding-window-counter",  # two counters per key: cheap, and no burst at window edges
        headers_enabled=True,
        in_memory_fallback_enabled=True,
        in_memory_fallback=[settings.rate_limit],
        swallow_errors=True,
        key_prefix="clarity",
        enabled=settings.rate_limit_enabled,
        on_breach=_count_breach,
    )
    return limiter


def _storage(redis_url: str | None) -> tuple[str, dict]:
    if not redis_url:
        return "memory://", {}
    return redis_url, {"socket_connect_timeout": REDIS_TIMEOUT_SECONDS, "socket_timeout": REDIS_TIMEOUT_SECONDS}


def _key() -> str:
    actor = _actor()
    if actor is not None:
        return "principal:" + _digest(str(actor.id))
    return "address:" + _digest(request.remote_addr or "")


def _actor():
    """The signed-in principal the request counts against; None: its client address."""
    unit = g.get("unit")
    return unit.actor if unit is not None else None


def _count_breach(_limit) -> None:
    """flask-limiter's on_breach: count the refusal by what was limited (never its key)."""
    metrics.count_rate_limited("address" if _actor() is None else "principal")


def _limit() -> str:
    settings = runtime().settings
    return settings.rate_limit if _actor() is not None else settings.rate_limit_anonymous


def _cost() -> int:
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "clarity_expensive", False):
        return runtime().settings.rate_limit_expensive_cost
    return 1


def _exempt() -> bool:
    """Health checks (load balancers poll them) and the API's documentation, the public
    blueprints, are not limited (sign-in is public too, but limited per address)."""
    return (request.blueprint or "") in PUBLIC_BLUEPRINTS


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]
