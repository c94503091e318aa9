"""A fresh benchmark database: dropped, recreated, migrated and seeded through the real repositories."""
from __future__ import annotations

import dataclasses
import random
import secrets
import uuid

import psycopg
from psycopg import sql

from clarity import config, create_app, localpg
from clarity.security.crypto import generate_key
from clarity.services import seeding
from clarity.services.seeding import patient_phi  # noqa: F401  (bench.bare, bench.ingest, bench.run use it from here)

DATABASE = "clarity_bench"


@dataclasses.dataclass(frozen=True)
class Seeded:
    env: dict            # DATABASE_URL, CLARITY_MIGRATION_DATABASE_URL and the keys
    provider_id: uuid.UUID
    token: str           # a live bearer token of the provider
    patient_ids: list    # the provider's patients, as strings


def keys_env() -> dict:
    """Fresh data and blind-index keys, as the app reads them from the environment."""
    return {"CLARITY_DATA_KEYS": f"bench1:{generate_key()}", "CLARITY_ACTIVE_DATA_KEY": "bench1",
            "CLARITY_BLIND_INDEX_KEY": generate_key()}


def recreate(cluster: localpg.Cluster) -> dict:
    """Drop the benchmark database if it exists, then create and migrate it; return its env."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
    return localpg.provision(cluster, DATABASE, secrets.token_urlsafe(18))


def seed(env: dict, patients: int) -> Seeded:
    """Create a provider with a one-hour token and ``patients`` patients of theirs.

    ``env`` holds the database URLs and keys; users and patients go through the app's
    repositories as its least-privileged role (services.seeding, as ``flask seed bench``).
    """
    settings = config.from_env({**env, "CLARITY_ENV": "development", "CLARITY_LOG_LEVEL": "WARNING",
                                "CLARITY_ARGON2_TIME_COST": "1", "CLARITY_ARGON2_MEMORY_KIB": "1024"})
    app = create_app(settings)
    try:
        [provider] = seeding.seed_providers(app.extensions["clarity"].db, patients=patients, providers=1,
                                            max_age_seconds=3600, rng=random.Random(20240601))
    finally:
        app.extensions["clarity"].db.close()
    with psycopg.connect(env["CLARITY_MIGRATION_DATABASE_URL"], autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return Seeded(env=env, provider_id=provider.provider_id, token=provider.token, patient_ids=provider.patient_ids)
