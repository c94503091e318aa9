"""Flask commands: ``db upgrade|status``, ``keys generate``, ``seed demo``."""
from __future__ import annotations

import os
import sys

import click
from flask.cli import AppGroup

from clarity.db import MIGRATIONS_DIR

db_cli = AppGroup("db", help="Schema migrations (yoyo).")
keys_cli = AppGroup("keys", help="Encryption keys.")
seed_cli = AppGroup("seed", help="Demo data for development.")


def init_app(app) -> None:
    for group in (db_cli, keys_cli, seed_cli):
        app.cli.add_command(group)


def _migration_backend():
    from flask import current_app
    from yoyo import get_backend, read_migrations

    settings = current_app.extensions["clarity"].settings
    url = settings.migration_database_url or settings.database_url
    if not url:
        raise click.ClickException("Set CLARITY_MIGRATION_DATABASE_URL (or DATABASE_URL).")
    return get_backend(yoyo_url(url)), read_migrations(str(MIGRATIONS_DIR))


def yoyo_url(url: str) -> str:
    """yoyo names the psycopg 3 driver in the URL scheme: postgresql+psycopg://."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else url


@db_cli.command("upgrade")
def db_upgrade():
    """Apply every pending migration."""
    backend, migrations = _migration_backend()
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    click.echo(f"applied {len(pending)} migration(s)")


@db_cli.command("status")
def db_status():
    """List migrations and whether each is applied; exit 1 when any is pending."""
    backend, migrations = _migration_backend()
    applied = {m.id for m in backend.to_rollback(migrations)}
    for migration in migrations:
        click.echo(f"{'applied' if migration.id in applied else 'PENDING'}  {migration.id}")
    if len(applied) < len(migrations):
        sys.exit(1)


@keys_cli.command("generate")
def keys_generate():
    """Print a fresh data key and blind-index key as environment assignments."""
    from clarity.security.crypto import generate_key

    kid = "k" + os.urandom(3).hex()
    click.echo(f"CLARITY_DATA_KEYS={kid}:{generate_key()}")
    click.echo(f"CLARITY_ACTIVE_DATA_KEY={kid}")
    click.echo(f"CLARITY_BLIND_INDEX_KEY={generate_key()}")


@seed_cli.command("demo")
@click.option("--password", envvar="CLARITY_DEMO_PASSWORD", help="Password for both demo users.")
def seed_demo(password):
    """Create (or reset) a demo admin and a demo provider, and print their credentials."""
    from flask import current_app

    from clarity.services import users

    app = current_app.extensions["clarity"]
    if app.settings.env == "production":
        raise click.ClickException("seed demo is for development; it refuses CLARITY_ENV=production")
    password = password or os.urandom(12).hex()
    for email, role in (("admin@clarity.local", "admin"), ("provider@clarity.local", "provider")):
        app.db.run(lambda uow: users.seed_user(uow, email=email, role=role, password=password,
                                                passwords=app.passwords))
        click.echo(f"{role:9s} {email}  password: {password}")
