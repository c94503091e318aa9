"""Clarity: the data backend of a clinical platform."""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from flask import Flask

if TYPE_CHECKING:  # for editors and type checkers only: no import-time work
    from flask_caching import Cache
    from flask_limiter import Limiter

    from clarity.config import Settings
    from clarity.db import Database
    from clarity.security.passwords import Passwords


@dataclasses.dataclass
class Clarity:
    """What the app needs at run time, built once by create_app (``app.extensions["clarity"]``)."""

    settings: Settings
    db: Database
    passwords: Passwords
    cache: Cache | None = None  # flask-caching, for what holds no PHI (the OpenAPI document)
    limiter: Limiter | None = None  # flask-limiter: the API's rate limits


class _Flask(Flask):
    """Flask, remembering which views and hooks are coroutines: Flask inspects each one on
    every call (eight per request here), about 3 % of a GET's CPU."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync = {}

    def ensure_sync(self, func):
        wrapped = self._sync.get(func)
        if wrapped is None:
            wrapped = self._sync[func] = super().ensure_sync(func)
        return wrapped


def runtime() -> Clarity:
    """What the current app runs on, built once by create_app: ``settings``, ``db`` (the pool
    and units of work), ``passwords``, ``cache`` and ``limiter``. Not the Flask app (that is
    ``current_app``)."""
    from flask import current_app

    return current_app.extensions["clarity"]


def create_app(settings=None, *, keyring=None) -> Flask:
    """The app factory. ``settings`` defaults to the environment (clarity.config.from_env).

    Reads configuration and SQL files, builds the pool (opened later, after fork or on first
    use) and registers the API. No connection is made here.
    """
    from clarity import api, cli, config, db, logs, queries
    from clarity.security.crypto import Keyring
    from clarity.security.passwords import Passwords

    settings = settings or config.from_env()
    logs.configure(settings.log_level, settings.log_format)
    if keyring is None and settings.data_keys and settings.blind_index_key:
        keyring = Keyring(settings.data_keys, settings.active_data_key, settings.blind_index_key,
                          settings.blind_index_next_key)
    elif keyring is None:
        # Production refuses this in config.validate; elsewhere the CLI (keys generate,
        # db upgrade) still works and PHI routes answer 503 until keys are configured.
        logging.getLogger(__name__).warning(
            "CLARITY_DATA_KEYS / CLARITY_BLIND_INDEX_KEY unset: PHI is unavailable")

    app = _Flask(__name__)
    app.extensions["clarity"] = Clarity(
        settings=settings,
        db=db.Database(settings, queries.load(), keyring),
        passwords=Passwords(settings.argon2_time_cost, settings.argon2_memory_kib),
    )
    api.init_app(app)
    cli.init_app(app)
    return app
