"""Biometric readings: ingestion (a batch is all-or-nothing, stored with COPY, its alerts raised
in the same statement), keyset pages, summaries per hour or day and the latest per kind.

Every access is scoped to a patient the actor may see (404 otherwise; auditors 403) and
audited once per request, with the kinds touched as the event's fields."""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from clarity.audit import CREATE, READ, AuditEvent
from clarity.errors import Invalid
from clarity.pagination import keyset, page
from clarity.repositories.biometrics import Partition, Reading
from clarity.security.access import Actor
from clarity.services.patient_access import require_patient

__all__ = ["KINDS", "Kind", "Reading", "accepted_window", "reading_problem", "ingest_readings",
           "list_readings", "summarize_readings", "latest_readings", "ensure_partitions"]

ENTITY = "biometric_reading"


@dataclasses.dataclass(frozen=True)
class Kind:
    unit: str
    min_value: float
    max_value: float


# Each kind's unit and plausible range: a value outside it is a device or entry error (422), not
# a clinical finding (those raise alerts). MIRRORED by the CHECK constraints
# biometric_readings_unit_check and biometric_readings_value_check in
# migrations/0010_biometrics_and_alerts.sql: change both together (a new migration for the
# database); tests/integration/test_biometrics_ingest.py checks that they agree.
KINDS: dict[str, Kind] = {
    "heart_rate": Kind("bpm", 20, 300),
    "bp_systolic": Kind("mmHg", 40, 300),
    "bp_diastolic": Kind("mmHg", 20, 200),
    "spo2": Kind("%", 40, 100),
    "temperature": Kind("°C", 20, 45),
    "respiratory_rate": Kind("breaths/min", 0, 100),
    "glucose": Kind("mg/dL", 10, 2000),
    "weight": Kind("kg", 0.2, 700),
    "steps": Kind("steps", 0, 100_000),
}

MAX_BATCH = 10_000
# Readings are accepted from the first day (UTC) of the month this many months back: the
# migration creates partitions that far back (clarity_create_biometric_partitions(24, 3)) and
# `flask --app wsgi biometrics partitions` keeps them there.
HISTORY_MONTHS = 24
PARTITION_MONTHS_AHEAD = 3  # the partitions command's default
CLOCK_SKEW = dt.timedelta(minutes=5)  # how far in the future a device clock may be
BUCKETS = ("hour", "day")
SUMMARY_DEFAULT_SPAN = {"hour": dt.timedelta(days=1), "day": dt.timedelta(days=30)}
SUMMARY_MAX_SPAN = {"hour": dt.timedelta(days=31), "day": dt.timedelta(days=731)}


def month_start(moment: dt.datetime, months_back: int = 0) -> dt.datetime:
    """The first instant (UTC) of the month ``months_back`` months before ``moment``'s."""
    moment = moment.astimezone(dt.timezone.utc)
    index = moment.year * 12 + moment.month - 1 - months_back
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.timezone.utc)


def accepted_window(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The range of ``recorded_at`` the API accepts, both ends inclusive."""
    return month_start(now, HISTORY_MONTHS), now + CLOCK_SKEW


def reading_problem(kind: str, value: float, unit: str, recorded_at: dt.datetime,
                    window: tuple[dt.datetime, dt.datetime]) -> tuple[str, str] | None:
    """``(field, message)`` of the first rule the reading breaks, else None. Messages name the
    rule, never the value."""
    spec = KINDS.get(kind)
    if spec is None:
        return "kind", f"kind must be one of: {', '.join(KINDS)}."
    if unit != spec.unit:
        return "unit", f"unit must be {spec.unit} for {kind}."
    if not spec.min_value <= value <= spec.max_value:
        return "value", f"value must be between {spec.min_value:g} and {spec.max_value:g} {spec.unit} for {kind}."
    earliest, latest = window
    if not earliest <= recorded_at <= latest:
        return "recorded_at", (f"recorded_at out of range: from {earliest:%Y-%m-%d} (UTC) to no more than "
                               f"{int(CLOCK_SKEW.total_seconds() // 60)} minutes in the future.")
    return None


def ingest_readings(uow, actor: Actor, patient_id, readings: Sequence[Reading]) -> dict:
    """Store a batch of readings (validated by the caller: reading_problem) as the patient's,
    all or nothing. A reading already stored (same kind, device and instant) is skipped, so a
    retried batch stores nothing twice; each stored reading outside its effective alert rule
    raises one alert, in the same statement. Returns received, stored, duplicates, alerts_raised."""
    event = AuditEvent(CREATE, "biometrics.ingest", ENTITY, patient_id=patient_id,
                       fields=tuple(sorted({r.kind for r in readings})))
    uow.audit(event)
    require_patient(uow, actor, patient_id, event)
    result = uow.biometrics.add_many(patient_id, readings)
    return {"received": len(readings), "stored": result.stored,
            "duplicates": len(readings) - result.stored, "alerts_raised": result.alerts_raised}


def list_readings(uow, actor: Actor, patient_id, *, kind=None, recorded_from=None, recorded_to=None,
                  after=None, limit: int = 50):
    """A keyset page of the patient's readings, newest first: ``(readings, next_after)``;
    ``next_after`` is the ``(recorded_at, kind, source_device)`` to continue after, or None."""
    event = AuditEvent(READ, "biometrics.read", ENTITY, patient_id=patient_id, fields=(kind,) if kind else ())
    uow.audit(event)
    require_patient(uow, actor, patient_id, event)
    rows = uow.reads.biometrics.list(patient_id, kinds=_kinds_of(kind), recorded_from=recorded_from,
                                     recorded_to=recorded_to, after=after, limit=limit + 1)
    items, next_after = page(rows, limit, keyset("recorded_at", "kind", "source_device"))
    event.fields = _kinds(items, kind)
    return items, next_after


def summarize_readings(uow, actor: Actor, patient_id, *, kind=None, bucket: str = "day",
                       recorded_from=None, recorded_to=None, now=None):
    """count, min, max and avg per kind and UTC hour or day over [recorded_from, recorded_to)
    (to defaults to now, from to a day (hour buckets) or 30 days (day buckets) before it; at most
    31 days of hours or 731 days of days). Returns (buckets, recorded_from, recorded_to)."""
    event = AuditEvent(READ, "biometrics.summary", ENTITY, patient_id=patient_id, fields=(kind,) if kind else ())
    uow.audit(event)
    require_patient(uow, actor, patient_id, event)
    if bucket not in BUCKETS:
        raise Invalid(f"bucket must be one of: {', '.join(BUCKETS)}.", field="bucket")
    recorded_to = recorded_to or (now or dt.datetime.now(dt.timezone.utc))
    recorded_from = recorded_from or recorded_to - SUMMARY_DEFAULT_SPAN[bucket]
    if recorded_from >= recorded_to:
        raise Invalid("from must be before to.", field="from")
    if recorded_to - recorded_from > SUMMARY_MAX_SPAN[bucket]:
        raise Invalid(f"A summary by {bucket} spans at most {SUMMARY_MAX_SPAN[bucket].days} days.", field="from")
    buckets = uow.reads.biometrics.summary(patient_id, kinds=_kinds_of(kind), bucket=bucket,
                                           recorded_from=recorded_from, recorded_to=recorded_to)
    event.fields = _kinds(buckets, kind)
    return buckets, recorded_from, recorded_to


def latest_readings(uow, actor: Actor, patient_id) -> list[Reading]:
    """The patient's latest reading of each kind they have readings of, by kind."""
    event = AuditEvent(READ, "biometrics.latest", ENTITY, patient_id=patient_id)
    uow.audit(event)
    require_patient(uow, actor, patient_id, event)
    latest = uow.biometrics.latest(patient_id, KINDS)
    event.fields = _kinds(latest)
    return latest


def ensure_partitions(repo, *, months_ahead: int = PARTITION_MONTHS_AHEAD) -> tuple[int, list[Partition]]:
    """Create the missing monthly partitions, from HISTORY_MONTHS back to ``months_ahead`` ahead,
    with ``repo`` on the table owner's connection: ``(created, every partition)``."""
    created = repo.create_partitions(months_back=HISTORY_MONTHS, months_ahead=months_ahead)
    return created, repo.partitions()


def _kinds_of(kind) -> tuple[str, ...]:
    """The kinds a read covers: the one asked for, else every kind. The queries probe the
    readings' unique key once per kind (sql/biometrics.sql), so KINDS must name every kind
    the database accepts (tests/integration/test_biometrics_ingest.py checks it)."""
    return (kind,) if kind else tuple(KINDS)


def _kinds(rows, kind=None) -> tuple[str, ...]:
    return tuple(sorted({row.kind for row in rows} | ({kind} if kind else set())))
