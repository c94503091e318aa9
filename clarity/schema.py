"""The schema's migrations: yoyo, plain SQL in ``migrations/``. One way to reach and apply them,
for ``flask --app wsgi db upgrade|status``, ``make run``'s local cluster and the tests."""
from __future__ import annotations

import contextlib

from clarity.db import MIGRATIONS_DIR


def yoyo_url(url: str) -> str:
    """yoyo names the psycopg 3 driver in the URL scheme: postgresql+psycopg://."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else url


@contextlib.contextmanager
def migration_backend(url: str):
    """Yield ``(backend, migrations)`` for the database at ``url`` (the schema owner's); the
    backend's connection is closed afterwards."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(url))
    try:
        yield backend, read_migrations(str(MIGRATIONS_DIR))
    finally:
        backend.connection.close()


def owner_connection(url: str, **options):
    """An autocommit connection as the schema owner (or the cluster's superuser), for DDL and
    provisioning; ``options`` go to psycopg.connect. Use it as a context manager."""
    import psycopg

    return psycopg.connect(url, autocommit=True, **options)


def apply_migrations(url: str) -> int:
    """Apply every pending migration under yoyo's lock; return how many were applied."""
    with migration_backend(url) as (backend, migrations):
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
    return len(pending)
