"""The REST API: flask-smorest blueprints, problem+json errors, request hooks."""
from __future__ import annotations

import logging
import re
import traceback
import uuid
from time import perf_counter

import psycopg
from flask import current_app, g, jsonify, request
from flask_caching import Cache
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from clarity import errors, logs, metrics
from clarity.api import access, body, idempotency, limits
from clarity.api.openapi import ClarityApi

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BODY_METHODS = {"POST", "PUT", "PATCH"}


def init_app(app) -> None:
    from clarity.api import (alerts, appointments, audit_events, auth, biometrics, digital_twins, docs,
                             documents, emergency_access, export, health, patients, records, users)

    settings = app.extensions["clarity"].settings
    app.config.update(
        API_TITLE="Clarity",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=docs.ASSETS_URL,
        MAX_CONTENT_LENGTH=4 * 1024 * 1024,
        JSON_SORT_KEYS=False,
        API_SPEC_OPTIONS={"components": {"securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearerAuth": []}]},
    )
    if settings.proxy_count:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_count, x_proto=settings.proxy_count)
    app.json = body.JSONProvider(app)
    api = ClarityApi(app)
    records.register_schemas(api)
    for module in (auth, users, patients, emergency_access, audit_events,
                   biometrics, alerts, appointments, records, digital_twins, export, documents):
        api.register_blueprint(module.blp)
    app.register_blueprint(health.blp)
    app.register_blueprint(docs.blp)
    _cache_openapi_document(app)
    # The request metrics first: their after_request, registered first, runs last, so the
    # latency spans every other hook.
    app.before_request(_start_timer)
    app.after_request(_count_request)
    # Order matters: the request id, the token (401), the rate limit (429), the role (403), and
    # only then the media type (415), an Idempotency-Key (400/409/422, or a replay) and, in the
    # view, the body.
    app.before_request(_assign_request_id)
    app.before_request(access.authenticate_request)
    app.extensions["clarity"].limiter = limits.init_app(app, settings)
    app.before_request(access.authorize_request)
    app.before_request(_require_json_body)
    app.before_request(idempotency.check_request)
    app.after_request(_finish_response)
    app.teardown_request(access.end_unopened_unit)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(errors.ClarityError, _clarity_error)
    app.register_error_handler(Exception, _unexpected_error)


def _cache_openapi_document(app) -> None:
    """The OpenAPI document is the same for the life of the process and takes about 10 ms to
    render: serve it from flask-caching's in-process cache. (It holds no PHI; nothing that does
    is ever cached.)"""
    cache = Cache(app, config={"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 0})
    endpoint = "api-docs.openapi_json"
    app.view_functions[endpoint] = cache.cached(key_prefix="openapi.json")(app.view_functions[endpoint])
    app.extensions["clarity"].cache = cache


def _start_timer():
    g.started = perf_counter()


def _count_request(response):
    """Count the request by its route template (never its path) and status."""
    req = request._get_current_object()  # one context lookup, not two: a microsecond a request
    rule, started = req.url_rule, getattr(g, "started", None)
    metrics.observe_request(rule.rule if rule is not None else metrics.UNMATCHED, req.method,
                            response.status_code, None if started is None else perf_counter() - started)
    return response


def _assign_request_id():
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    logs.note_request(request_id=g.request_id, route=request.url_rule.rule if request.url_rule else None)


def _require_json_body():
    if request.method in _BODY_METHODS and request.path.startswith("/api/"):
        has_body = request.content_length or request.headers.get("Transfer-Encoding")
        if (has_body or request.mimetype) and not request.is_json and not _takes_raw_body():
            raise errors.UnsupportedMediaType("Send the body as application/json.")


def _takes_raw_body() -> bool:
    """The view reads its body itself, as bytes of its own media types (documents.raw_body)."""
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(view, "clarity_raw_body", False)


def _finish_response(response):
    response.headers["X-Request-ID"] = g.get("request_id", "")
    if request.path.startswith("/api/") and request.path != "/api/v1/openapi.json":
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def problem(status: int, title: str, detail: str, headers=None, **extra):
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "instance": request.path, "request_id": g.get("request_id")}
    body.update({k: v for k, v in extra.items() if v is not None})
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _clarity_error(exc: errors.ClarityError):
    if exc.status >= 500:
        log.error("%s: %s", type(exc).__name__, exc.detail)
    return problem(exc.status, exc.title, exc.detail, exc.headers, field=exc.field)


def _http_error(exc: HTTPException):
    data = getattr(exc, "data", None) or {}
    detail = exc.description or exc.name
    messages = data.get("messages")
    if exc.code == 422:
        detail = "The request has invalid or unknown fields."
    elif exc.code == 400 and messages:
        detail = "The request body is not valid JSON."
        messages = None
    # get_headers carries what the status needs, e.g. Allow on a 405.
    headers = {**dict(exc.get_headers()), **dict(getattr(exc, "headers", None) or data.get("headers") or {})}
    headers.pop("Content-Type", None)
    return problem(exc.code or 500, exc.name, detail, headers, errors=messages)


def _unexpected_error(exc: Exception):
    translated = errors.translate(exc)
    if translated is not None:
        return _clarity_error(translated)
    if isinstance(exc, psycopg.Error):
        # Driver messages can quote input values: log the class and SQLSTATE only.
        log.error("database error %s (SQLSTATE %s)", type(exc).__name__, getattr(exc, "sqlstate", None))
    else:
        # The traceback without the exception's message, which may quote a value.
        log.error("unexpected %s\n%s", type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
    return problem(500, "Internal Server Error", "An unexpected error occurred.")
