"""Alert rules (global defaults and per-patient overrides) and the alerts readings raise.

Alerts are raised by sql/biometrics.sql insert_biometric_readings, in the statement that stores
the readings; this repository reads and updates them."""
from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from psycopg.rows import class_row


@dataclasses.dataclass(frozen=True)
class AlertRule:
    id: uuid.UUID
    patient_id: uuid.UUID | None  # None: the global default for the kind
    kind: str
    min_value: float | None
    max_value: float | None
    severity: str
    version: int
    created_by: uuid.UUID | None  # None: seeded by the migration
    updated_by: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class EffectiveRule:
    """The rule that applies to a patient for a kind: an override or the global default."""

    kind: str
    override: bool
    id: uuid.UUID
    min_value: float | None
    max_value: float | None
    severity: str
    version: int
    updated_at: dt.datetime
    default_min_value: float | None  # the global default beside an override (else None)
    default_max_value: float | None
    default_severity: str | None

    @property
    def default(self) -> dict | None:
        """The global default beside an override, or None."""
        if self.default_severity is None:
            return None
        return {"min_value": self.default_min_value, "max_value": self.default_max_value,
                "severity": self.default_severity}


@dataclasses.dataclass(frozen=True)
class Alert:
    id: uuid.UUID
    patient_id: uuid.UUID
    kind: str
    value: float
    reading_recorded_at: dt.datetime
    source_device: str
    min_value: float | None
    max_value: float | None
    rule_scope: str
    severity: str
    status: str
    acknowledged_by: uuid.UUID | None
    acknowledged_at: dt.datetime | None
    resolved_by: uuid.UUID | None
    resolved_at: dt.datetime | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    # The patient's provider, read by get and list only (None from the other queries): what
    # services.patient_access.mark_emergency needs to audit an access only a grant allows.
    patient_provider_id: uuid.UUID | None = None


class AlertRepository:
    def __init__(self, conn, queries):
        self.conn = conn
        self.q = queries

    # Rules

    def effective_rules(self, patient_id) -> list[EffectiveRule]:
        return self.q.list_alert_rules.all(self.conn, {"patient_id": patient_id}, class_row(EffectiveRule))

    def global_rules(self) -> list[AlertRule]:
        return self.q.list_global_alert_rules.all(self.conn, None, class_row(AlertRule))

    def get_rule(self, patient_id, kind: str) -> AlertRule | None:
        """The patient's override for ``kind``, or the global default when ``patient_id`` is None."""
        return self.q.get_alert_rule.one(self.conn, {"patient_id": patient_id, "kind": kind}, class_row(AlertRule))

    def add_rule(self, patient_id, kind: str, *, min_value, max_value, severity: str, actor_id) -> AlertRule | None:
        """Create the rule; None when one for this patient (or global) and kind exists already."""
        return self.q.insert_alert_rule.one(self.conn, {
            "patient_id": patient_id, "kind": kind, "min_value": min_value, "max_value": max_value,
            "severity": severity, "actor_id": actor_id}, class_row(AlertRule))

    def update_rule(self, rule_id, version: int, *, min_value, max_value, severity: str, actor_id) -> AlertRule | None:
        """Replace bounds and severity when ``version`` matches; None when it does not."""
        return self.q.update_alert_rule.one(self.conn, {
            "id": rule_id, "version": version, "min_value": min_value, "max_value": max_value,
            "severity": severity, "actor_id": actor_id}, class_row(AlertRule))

    def delete_rule(self, rule_id, version: int) -> bool:
        """Delete a patient's override when ``version`` matches; False when it does not."""
        return self.q.delete_alert_rule.rowcount(self.conn, {"id": rule_id, "version": version}) == 1

    # Alerts

    def list_for_patient(self, patient_id, *, status=None, after=None, limit: int = 50) -> list[Alert]:
        """A keyset page of the patient's alerts, newest reading first; ``after`` is the
        ``(reading_recorded_at, id)`` of the previous page's last alert."""
        after_recorded_at, after_id = after or (None, None)
        return self.q.list_patient_alerts.all(self.conn, {
            "patient_id": patient_id, "status": status, "after_recorded_at": after_recorded_at,
            "after_id": after_id, "limit": limit}, class_row(Alert))

    def list(self, actor, *, status=None, after=None, limit: int = 50) -> list[Alert]:
        """A keyset page of the alerts of every live patient the actor may see, each with
        ``patient_provider_id``."""
        after_recorded_at, after_id = after or (None, None)
        return self.q.list_alerts.all(self.conn, {
            **actor.scope(), "status": status, "after_recorded_at": after_recorded_at,
            "after_id": after_id, "limit": limit}, class_row(Alert))

    def get(self, alert_id, actor) -> Alert | None:
        """The alert, with ``patient_provider_id``, if the actor may see its patient; None
        otherwise (absent or out of scope)."""
        return self.q.get_alert.one(self.conn, {"id": alert_id, **actor.scope()}, class_row(Alert))

    def set_status(self, alert_id, version: int, status: str, *, actor_id) -> Alert | None:
        """Record the new status with who and when, when ``version`` matches; else None."""
        return self.q.update_alert_status.one(self.conn, {
            "id": alert_id, "version": version, "status": status, "actor_id": actor_id}, class_row(Alert))
