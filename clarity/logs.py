"""Log lines: text for people (``CLARITY_LOG_FORMAT=text``) or one JSON object per line for log
pipelines (``json``; the default in production).

A JSON line has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, and within a
request its ``request_id``, ``method``, ``route`` (the URL rule, ``/api/v1/patients/<uuid:patient_id>``,
never the path with its ids) and ``actor_id``; gunicorn's access line adds ``status``,
``duration_ms``, ``bytes`` and ``client``. Messages are the app's own, which never hold PHI;
an exception is named by its type only, never its message (a driver message can quote values).

The app leaves what the access line needs in the WSGI environ (``note_request``); gunicorn's
logger (``GunicornLogger``, chosen by gunicorn.conf.py) reads it from there.
"""
from __future__ import annotations

import datetime as dt
import logging

import orjson
from flask import g, has_request_context, request
from gunicorn import glogging

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
# WSGI environ keys the app sets for the access line.
REQUEST_ID, ROUTE, ACTOR_ID = "clarity.request_id", "clarity.route", "clarity.actor_id"


def default_format(env: str) -> str:
    """JSON in production, text elsewhere."""
    return "json" if env == "production" else "text"


def configure(level: str, log_format: str) -> None:
    """Set up the root logger (once per process, as logging.basicConfig does)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


def note_request(**fields) -> None:
    """Keep ``request_id``, ``route`` or ``actor_id`` of the current request for its log lines."""
    environ = request.environ
    for name, value in fields.items():
        environ[f"clarity.{name}"] = None if value is None else str(value)


class JSONFormatter(logging.Formatter):
    """One JSON object per record; ``record.fields`` (a dict, from ``extra``) is merged in."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if has_request_context():
            environ = request.environ
            line.update(request_id=environ.get(REQUEST_ID) or g.get("request_id"), method=request.method,
                        route=request.url_rule.rule if request.url_rule else None,
                        actor_id=environ.get(ACTOR_ID))
        line.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
        return orjson.dumps(line).decode()


class GunicornLogger(glogging.Logger):
    """gunicorn's logger writing JSON lines: its own messages, and one access line per request
    with the request id, route template and actor the app noted."""

    def setup(self, cfg):
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(JSONFormatter())

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        self.access_log.info("request", extra={"fields": {
            "request_id": environ.get(REQUEST_ID), "method": req.method, "route": environ.get(ROUTE),
            "status": resp.status_code, "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "bytes": getattr(resp, "sent", None), "actor_id": environ.get(ACTOR_ID),
            "client": environ.get("REMOTE_ADDR")}})
