"""Benchmark seeding: provider users with live bearer tokens, and patients of theirs.

Everything goes through the repositories as the app's own role, so the patients are real: PHI
sealed in AES-GCM envelopes under the active key, blind indexes computed, row-level security
checked with the provider as the actor. Nothing is audited: seeding is not an access to PHI.
"""
from __future__ import annotations

import dataclasses
import random
import secrets
import uuid

from clarity.security.access import PROVIDER, Actor, new_token

# A password hash that argon2 cannot parse: Passwords.verify answers False for any password, so
# a seeded provider signs in only through the token it was seeded with.
UNUSABLE_PASSWORD_PREFIX = "!unusable:"
BATCH = 2_000  # patients per transaction


@dataclasses.dataclass(frozen=True)
class SeededProvider:
    provider_id: uuid.UUID
    token: str           # a live bearer token of the provider
    patient_ids: list    # the provider's patients, as strings


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


def spread(total: int, parts: int) -> list[int]:
    """``total`` split over ``parts`` as evenly as possible, the larger shares first."""
    share, extra = divmod(total, parts)
    return [share + (i < extra) for i in range(parts)]


def add_provider(uow, *, label: str, max_age_seconds: int) -> tuple[uuid.UUID, str]:
    """A provider user with a random email and an unusable password, and a bearer token valid
    for ``max_age_seconds``: (user id, token)."""
    user = uow.users.add(email=f"{label}-{secrets.token_hex(6)}@clarity.test", display_name=f"Bench {label}",
                         role=PROVIDER, password_hash=UNUSABLE_PASSWORD_PREFIX + secrets.token_hex(16))
    token, digest = new_token()
    uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=max_age_seconds, client_addr=None)
    return user.id, token


def add_patients(uow, provider_id, mrns, rng: random.Random) -> list[str]:
    """Active patients of ``provider_id``, one per MRN; their ids as strings."""
    return [str(uow.patients.add(provider_id=provider_id, status="active", phi=patient_phi(rng, mrn)).id)
            for mrn in mrns]


def seed_providers(db, *, patients: int, providers: int, max_age_seconds: int,
                   rng: random.Random | None = None, batch: int = BATCH) -> list[SeededProvider]:
    """``providers`` fresh providers with ``patients`` patients spread over them, through ``db``
    (a Database): each provider and its token in one transaction, then its patients in
    transactions of up to ``batch``, with the provider as the actor. MRNs carry a random run
    prefix, so seeding twice into one database never collides."""
    rng = rng or random.Random()
    run = secrets.token_hex(3).upper()
    seeded, first = [], 0
    for index, count in enumerate(spread(patients, providers)):
        provider_id, token = db.run(lambda uow: add_provider(uow, label=f"provider{index}",
                                                             max_age_seconds=max_age_seconds))
        ids: list[str] = []
        for start in range(first, first + count, batch):
            mrns = [f"SEED-{run}-{n:07d}" for n in range(start, min(start + batch, first + count))]
            ids += db.run(lambda uow: add_patients(uow, provider_id, mrns, rng),
                          actor=Actor(id=provider_id, role=PROVIDER))
        seeded.append(SeededProvider(provider_id=provider_id, token=token, patient_ids=ids))
        first += count
    return seeded
