"""A fresh benchmark database: dropped, recreated, migrated and seeded through the real repositories."""
from __future__ import annotations

import dataclasses
import random
import secrets
import uuid

import psycopg
from psycopg import sql

from clarity import config, create_app, localpg
from clarity.security.access import Actor, new_token
from clarity.security.crypto import generate_key

DATABASE = "clarity_bench"
BATCH = 2_000


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


def patient_phi(rng: random.Random, mrn: str) -> dict:
    """A plausible PHI dict shaped like what POST /api/v1/patients stores."""
    last = rng.choice(["Lovelace", "Hopper", "Turing", "Noether", "Curie", "Franklin", "Meitner"])
    return {
        "first_name": rng.choice(["Ada", "Grace", "Alan", "Emmy", "Marie", "Rosalind", "Lise"]),
        "last_name": last, "sex": rng.choice(["female", "male", "other", "unknown"]),
        "date_of_birth": f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "mrn": mrn, "email": f"{last.lower()}.{mrn.lower()}@example.org",
        "phone": f"+44 20 7946 {rng.randint(0, 9999):04d}", "ssn": None,
        "address": {"line1": f"{rng.randint(1, 200)} St James's Square", "city": "London", "country": "GB"},
        "insurance": {"payer": "NHS", "member_id": f"{rng.randint(0, 10**10):010d}"},
        "emergency_contact": {"name": "Charles Babbage", "relationship": "friend", "phone": "+44 20 7946 0001"},
        "notes": "Prefers morning appointments.",
    }


def seed(env: dict, patients: int) -> Seeded:
    """Create a provider with a one-hour token and ``patients`` patients of theirs.

    ``env`` holds the database URLs and keys; users and patients go through the app's
    repositories as its least-privileged role, in a few transactions.
    """
    settings = config.from_env({**env, "CLARITY_ENV": "development", "CLARITY_LOG_LEVEL": "WARNING",
                                "CLARITY_ARGON2_TIME_COST": "1", "CLARITY_ARGON2_MEMORY_KIB": "1024"})
    app = create_app(settings)
    clarity = app.extensions["clarity"]
    rng = random.Random(20240601)
    try:
        def add_provider(uow):
            user = uow.users.add(email="bench-provider@clarity.test", display_name="Bench provider",
                                 role="provider", password_hash=clarity.passwords.hash(secrets.token_urlsafe(16)))
            token, digest = new_token()
            uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=3600, client_addr=None)
            return user.id, token

        provider_id, token = clarity.db.run(add_provider)
        ids: list[str] = []
        for start in range(0, patients, BATCH):
            def add_batch(uow, start=start):
                return [str(uow.patients.add(provider_id=provider_id, status="active",
                                             phi=patient_phi(rng, f"SEED-{n:06d}")).id)
                        for n in range(start, min(start + BATCH, patients))]
            ids.extend(clarity.db.run(add_batch, actor=Actor(id=provider_id, role="provider")))
    finally:
        clarity.db.close()
    with psycopg.connect(env["CLARITY_MIGRATION_DATABASE_URL"], autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return Seeded(env=env, provider_id=provider_id, token=token, patient_ids=ids)
