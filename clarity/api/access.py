"""Who may call a route, checked before anything of the request is read.

Order of checks on every request (design §6): the bearer token (401), the rate limit (429,
clarity.api.limits), then the route's roles (403), and only then does the view read and
validate the body and query (400/415/422), and the service scope the data (404). The token is checked in the unit of work the view then runs
its work in, so authentication costs no round trip of its own.
"""
from __future__ import annotations

from flask import current_app, g, request

from clarity import logs
from clarity.api.common import bearer_token, runtime
from clarity.audit import CREATE, DELETE, READ, UPDATE, AuditEvent
from clarity.errors import Forbidden, Unauthorized
from clarity.services import auth

# Routes anyone may call: sign-in, health, and the API's own documentation.
PUBLIC_ENDPOINTS = frozenset({"auth.create_token"})
PUBLIC_BLUEPRINTS = frozenset({"health", "api-docs", "api-docs-assets"})
_ACTIONS = {"GET": READ, "HEAD": READ, "POST": CREATE, "PUT": UPDATE, "PATCH": UPDATE, "DELETE": DELETE}


def roles(*allowed: str):
    """Declare the roles that may call a view (put it right above ``def``); a route without
    it is open to every authenticated role. A denied role gets 403 before the body is read."""
    def declare(view):
        view.clarity_roles = frozenset(allowed)
        return view
    return declare


def is_public(endpoint: str | None) -> bool:
    return endpoint is not None and (endpoint in PUBLIC_ENDPOINTS
                                     or endpoint.partition(".")[0] in PUBLIC_BLUEPRINTS
                                     or endpoint == "static")


def authenticate_request() -> None:
    """before_request: open the request's unit of work, check the bearer token in it (401),
    and leave the unit for the view (``common.run``); the rate limit and then the route's roles
    (``authorize_request``) are checked next.

    Unrouted requests (404/405) and public routes pass untouched; nothing of the request's
    body or query string is read here.
    """
    endpoint = request.endpoint
    if endpoint is None or is_public(endpoint):
        return
    token = bearer_token()
    if token is None:
        raise Unauthorized()
    uow = runtime().db.begin(request_id=g.request_id, client_addr=request.remote_addr)
    try:
        auth.authenticate(uow, token, settings=runtime().settings)
    except BaseException as exc:
        uow.end(exc)
        raise
    g.unit = uow
    logs.note_request(actor_id=uow.actor.id)


def authorize_request() -> None:
    """before_request, after authentication: the route's roles (403, audited), checked before
    the body is read. A denied request's unit of work ends here, keeping its audit event."""
    uow = g.get("unit")
    if uow is None:
        return
    try:
        _require_route_role(uow, uow.actor, current_app.view_functions[request.endpoint])
    except BaseException as exc:
        g.pop("unit")
        uow.end(exc)
        raise


def end_unopened_unit(exc: BaseException | None = None) -> None:
    """teardown_request: a unit the view never ran work in (it failed validation, say) is
    rolled back and its connection returned."""
    uow = g.pop("unit", None)
    if uow is not None:
        uow.end(exc or _Unused())


class _Unused(Exception):
    """Ends a request's unit of work that no work ran in: roll back, write nothing."""


def _require_route_role(uow, actor, view) -> None:
    allowed = getattr(view, "clarity_roles", None)
    if allowed is None or actor.role in allowed:
        return
    args = request.view_args or {}
    entity_id = next((v for k, v in reversed(args.items()) if k.endswith("_id")), None)
    uow.audit(AuditEvent(_ACTIONS.get(request.method, READ), "access.denied", request.blueprint,
                         entity_id, args.get("patient_id"), outcome="denied"))
    raise Forbidden("Your role does not allow this action.")

