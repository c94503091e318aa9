"""Alert rules and alerts.

A rule bounds one kind of reading. Each kind may have a global default (seeded by the
migration, changed by admins) and, per patient, an override (managed by the patient's provider
or an admin) that beats the default. Ingesting readings raises an alert for each stored reading
outside its effective rule (clarity.services.biometrics.ingest_readings). Alerts move
open -> acknowledged -> resolved (or open -> resolved); anything else is a 409 Conflict.
Every access is audited before the role and scope checks, so denials leave a trace too; an
access only an emergency-access grant allows is audited as such (services.patient_access.mark_emergency),
and a grant shows a patient's rules without letting the holder change them."""
from __future__ import annotations

from clarity.audit import CREATE, DELETE, READ, UPDATE, AuditEvent
from clarity.errors import Conflict, Forbidden, Invalid, NotFound, PreconditionFailed, PreconditionRequired
from clarity.pagination import keyset, page
from clarity.security.access import ADMIN, PHI_ROLES, Actor, require_role
from clarity.services.biometrics import KINDS
from clarity.services.patient_access import mark_emergency, require_patient

RULE, ALERT = "alert_rule", "alert"
SEVERITIES = ("low", "medium", "high")
STATUSES = ("open", "acknowledged", "resolved")
TRANSITIONS = {"open": ("acknowledged", "resolved"), "acknowledged": ("resolved",), "resolved": ()}
RULE_FIELDS = ("min_value", "max_value", "severity")
STALE_RULE = "The rule has changed since you read it; fetch it again."
STALE_ALERT = "The alert has changed since you read it; fetch it again."
ALERT_KEY = keyset("reading_recorded_at", "id")


def list_alert_rules(uow, actor: Actor, patient_id):
    """The patient's effective rule per kind (overrides marked, with the default beside them)."""
    event = AuditEvent(READ, "alert_rule.read", RULE, patient_id=patient_id)
    uow.audit(event)
    require_patient(uow, actor, patient_id, event)
    return uow.alerts.effective_rules(patient_id)


def list_global_alert_rules(uow, actor: Actor):
    """The global defaults (no PHI: not audited); admins and providers."""
    require_role(actor, *PHI_ROLES)
    return uow.alerts.global_rules()


def put_alert_rule(uow, actor: Actor, patient_id, kind: str, version: int | None, *,
                   min_value, max_value, severity: str):
    """Create or replace the patient's override for ``kind`` (``patient_id`` None: the global
    default, admins only). Replacing needs the version read (PreconditionRequired without,
    PreconditionFailed when stale); creating takes none (PreconditionFailed when one is given,
    or when another request created the rule meanwhile). Returns ``(rule, created)``."""
    event = AuditEvent(UPDATE, "alert_rule.update", RULE, patient_id=patient_id, fields=RULE_FIELDS)
    uow.audit(event)
    _may_manage_rules(uow, actor, patient_id, event)
    _check_rule(kind, min_value, max_value, severity)
    current = uow.alerts.get_rule(patient_id, kind)
    if current is None:
        if version is not None:
            raise PreconditionFailed("There is no such rule to replace; send no If-Match to create it.")
        event.action, event.event_type = CREATE, "alert_rule.create"
        rule = uow.alerts.add_rule(patient_id, kind, min_value=min_value, max_value=max_value,
                                   severity=severity, actor_id=actor.id)
        if rule is None:
            raise PreconditionFailed("The rule was created meanwhile; fetch it and send If-Match.")
    else:
        if version is None:
            raise PreconditionRequired("Send If-Match with the version of the rule you read.")
        if current.version != version:
            raise PreconditionFailed(STALE_RULE)
        rule = uow.alerts.update_rule(current.id, version, min_value=min_value, max_value=max_value,
                                      severity=severity, actor_id=actor.id)
        if rule is None:
            raise PreconditionFailed(STALE_RULE)
    event.entity_id = rule.id
    return rule, current is None


def delete_alert_rule(uow, actor: Actor, patient_id, kind: str, version: int) -> None:
    """Delete the patient's override for ``kind``: the global default applies again."""
    event = AuditEvent(DELETE, "alert_rule.delete", RULE, patient_id=patient_id, fields=RULE_FIELDS)
    uow.audit(event)
    _may_manage_rules(uow, actor, patient_id, event)
    current = uow.alerts.get_rule(patient_id, kind) if kind in KINDS else None
    if current is None:
        raise NotFound("This patient has no rule of their own for this kind.")
    event.entity_id = current.id
    if current.version != version or not uow.alerts.delete_rule(current.id, version):
        raise PreconditionFailed(STALE_RULE)


def list_patient_alerts(uow, actor: Actor, patient_id, *, status=None, after=None, limit: int = 50):
    """A keyset page of the patient's alerts, newest reading first: ``(alerts, next_after)``."""
    event = AuditEvent(READ, "alert.read", ALERT, patient_id=patient_id)
    uow.audit(event)
    require_patient(uow, actor, patient_id, event)
    rows = uow.alerts.list_for_patient(patient_id, status=status, after=after, limit=limit + 1)
    items, next_after = page(rows, limit, ALERT_KEY)
    event.fields = tuple(sorted({a.kind for a in items}))
    return items, next_after


def list_alerts(uow, actor: Actor, *, status=None, after=None, limit: int = 50):
    """A keyset page of the alerts of every patient the actor may see (admins: all), newest
    reading first: ``(alerts, next_after)``. Audited as the query, then once per patient on the
    page with the kinds of their alerts (as an emergency access for a patient only a grant
    opens, told by the patient's provider each alert is read with: one statement per page)."""
    uow.audit(AuditEvent(READ, "alert.list", ALERT, fields=("status",) if status else ()))
    require_role(actor, *PHI_ROLES)
    rows = uow.alerts.list(actor, status=status, after=after, limit=limit + 1)
    items, next_after = page(rows, limit, ALERT_KEY)
    kinds: dict = {}
    providers: dict = {}
    for alert in items:
        kinds.setdefault(alert.patient_id, set()).add(alert.kind)
        providers[alert.patient_id] = alert.patient_provider_id
    for patient_id, touched in kinds.items():
        event = AuditEvent(READ, "alert.list", ALERT, patient_id=patient_id, fields=tuple(sorted(touched)))
        uow.audit(event)
        mark_emergency(event, actor, providers[patient_id])
    return items, next_after


def get_alert(uow, actor: Actor, alert_id):
    """The alert, or NotFound when it does not exist or the actor may not see its patient."""
    event = AuditEvent(READ, "alert.read", ALERT, alert_id)
    uow.audit(event)
    alert = _visible(uow, actor, alert_id, event)
    event.fields = (alert.kind,)
    return alert


def change_alert_status(uow, actor: Actor, alert_id, version: int, status: str):
    """Acknowledge or resolve an alert at ``version``, recording who and when. Raises NotFound,
    PreconditionFailed (stale), Conflict (a transition the status does not allow)."""
    event = AuditEvent(UPDATE, "alert.update", ALERT, alert_id, fields=("status",))
    uow.audit(event)
    alert = _visible(uow, actor, alert_id, event)
    if alert.version != version:
        raise PreconditionFailed(STALE_ALERT)
    if status not in TRANSITIONS[alert.status]:
        raise Conflict(f"An alert that is {alert.status} cannot become {status}.", field="status")
    updated = uow.alerts.set_status(alert_id, version, status, actor_id=actor.id)
    if updated is None:
        raise PreconditionFailed(STALE_ALERT)
    return updated


def _visible(uow, actor: Actor, alert_id, event):
    """The alert if the actor may see its patient (Forbidden without a PHI role, NotFound
    otherwise), ``event`` given its patient and audited as require_patient audits the
    patient's data, from the patient's provider read with the alert."""
    require_role(actor, *PHI_ROLES)
    alert = uow.alerts.get(alert_id, actor)
    if alert is None:
        raise NotFound("No such alert.")
    event.patient_id = alert.patient_id
    mark_emergency(event, actor, alert.patient_provider_id)
    return alert


def _may_manage_rules(uow, actor: Actor, patient_id, event) -> None:
    """Global defaults: admins. A patient's rules: an admin or the patient's own provider (an
    emergency-access grant shows them, it does not make them yours to change: ``event`` then
    records a denied emergency attempt)."""
    if patient_id is None:
        require_role(actor, ADMIN)
        return
    access = require_patient(uow, actor, patient_id)
    if mark_emergency(event, actor, access["provider_id"]):
        raise Forbidden("Only the patient's provider or an admin may change their alert rules.")


def _check_rule(kind: str, min_value, max_value, severity: str) -> None:
    spec = KINDS.get(kind)
    if spec is None:
        raise NotFound("No such kind of reading.")
    if severity not in SEVERITIES:
        raise Invalid(f"severity must be one of: {', '.join(SEVERITIES)}.", field="severity")
    if min_value is None and max_value is None:
        raise Invalid("Set min_value, max_value or both.", field="min_value")
    for field, bound in (("min_value", min_value), ("max_value", max_value)):
        if bound is not None and not spec.min_value <= bound <= spec.max_value:
            raise Invalid(f"{field} must be between {spec.min_value:g} and {spec.max_value:g} {spec.unit}.",
                          field=field)
    if min_value is not None and max_value is not None and min_value >= max_value:
        raise Invalid("min_value must be below max_value.", field="max_value")
