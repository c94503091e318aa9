"""Liveness and readiness probes: no auth, no PHI."""
from __future__ import annotations

from flask import Blueprint, jsonify

from clarity.api.common import runtime

blp = Blueprint("health", __name__, url_prefix="/health")


@blp.get("/live")
def live():
    return jsonify(status="ok")


@blp.get("/ready")
def ready():
    ok, detail = runtime().db.ready()
    response = jsonify(status="ok" if ok else "unavailable", detail=detail)
    if not ok:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return response
