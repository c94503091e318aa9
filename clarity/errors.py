"""One error vocabulary: domain errors, driver-error translation, and their HTTP status.

Messages are written for API clients: they name fields, never values, SQL, keys or PHI.
"""
from __future__ import annotations

import dataclasses

import psycopg
from psycopg import errors as pg
from psycopg_pool import PoolTimeout

from clarity import metrics


class ClarityError(Exception):
    """Base of every error the API renders as problem+json."""

    status = 500
    title = "Internal Server Error"
    outcome = "failure"  # what an audit event records when this error ends a unit of work

    def __init__(self, detail: str | None = None, *, field: str | None = None, headers=None):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.field = field
        self.headers = headers or {}


class BadRequest(ClarityError):
    status, title = 400, "Bad Request"


class Unauthorized(ClarityError):
    status, title, outcome = 401, "Unauthorized", "denied"

    def __init__(self, detail="A valid bearer token is required.", **kw):
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="clarity"'}, **kw)


class Forbidden(ClarityError):
    status, title, outcome = 403, "Forbidden", "denied"


class NotFound(ClarityError):
    status, title, outcome = 404, "Not Found", "denied"


class Conflict(ClarityError):
    status, title = 409, "Conflict"


class PreconditionFailed(ClarityError):
    status, title = 412, "Precondition Failed"


class UnsupportedMediaType(ClarityError):
    status, title = 415, "Unsupported Media Type"


class LengthRequired(ClarityError):
    status, title = 411, "Length Required"


class ContentTooLarge(ClarityError):
    status, title = 413, "Content Too Large"


class RangeNotSatisfiable(ClarityError):
    """No byte of the range asked for exists; ``size`` goes into ``Content-Range: bytes */size``."""

    status, title = 416, "Range Not Satisfiable"

    def __init__(self, detail="The range asked for is outside the content.", *, size: int, **kw):
        super().__init__(detail, headers={"Content-Range": f"bytes */{size}"}, **kw)


class Invalid(ClarityError):
    status, title = 422, "Unprocessable Content"


class PreconditionRequired(ClarityError):
    status, title = 428, "Precondition Required"


class TooManyRequests(ClarityError):
    status, title, outcome = 429, "Too Many Requests", "denied"

    def __init__(self, detail="Too many failed attempts; try again later.", retry_after=60, **kw):
        super().__init__(detail, headers={"Retry-After": str(int(retry_after))}, **kw)


class Unavailable(ClarityError):
    status, title = 503, "Service Unavailable"

    def __init__(self, detail="The service is temporarily unavailable; retry shortly.", retry_after=1, **kw):
        super().__init__(detail, headers={"Retry-After": str(int(retry_after))}, **kw)


class DecryptionError(ClarityError):
    """An envelope failed authentication: altered, or copied from another row."""

    status, title = 500, "Internal Server Error"


@dataclasses.dataclass(frozen=True)
class Violation:
    """What breaking one constraint means to a client: the error, the field named, the message."""

    error: type[ClarityError]
    field: str
    detail: str

    def __call__(self) -> ClarityError:
        """A new error to raise (each raise gets its own: it carries its own cause)."""
        return self.error(self.detail, field=self.field)


# Constraint (or unique index) name -> its Violation: the one message per constraint, for the
# constraints guarding a value a client sends (behind the schemas, which refuse most first).
# Names follow <table>_<columns>_<kind>. tests/integration/test_error_translation.py checks every
# name against the migrated schema, and lists the constraints left out, each with its reason.
CONSTRAINTS = {
    "users_email_key": Violation(Conflict, "email", "Another record already has this email."),
    "users_email_check": Violation(Invalid, "email", "email is not allowed."),
    "users_display_name_check": Violation(Invalid, "display_name", "display_name is not allowed."),
    "users_role_check": Violation(Invalid, "role", "role is not allowed."),
    "patients_mrn_bidx_key": Violation(Conflict, "mrn", "Another record already has this mrn."),
    "patients_mrn_bidx_rotating_key": Violation(Conflict, "mrn", "Another record already has this mrn."),
    "patients_provider_id_fkey": Violation(Invalid, "provider_id", "provider_id does not exist."),
    "patients_birth_year_check": Violation(Invalid, "date_of_birth", "date_of_birth is not allowed."),
    "patients_status_check": Violation(Invalid, "status", "status is not allowed."),
    "appointments_provider_id_starts_at_excl": Violation(
        Conflict, "starts_at", "The provider already has an appointment at this time."),
    "appointments_ends_at_check": Violation(Invalid, "ends_at", "ends_at is not allowed."),
    "appointments_status_check": Violation(Invalid, "status", "status is not allowed."),
    "appointments_cancelled_at_check": Violation(Invalid, "status", "status is not allowed."),
    "appointments_patient_id_fkey": Violation(Invalid, "patient_id", "patient_id does not exist."),
    "appointments_provider_id_fkey": Violation(Invalid, "provider_id", "provider_id does not exist."),
    "medical_records_amends_id_fkey": Violation(
        Invalid, "amends_id", "amends_id must name a record of the same patient and type."),
    "medical_records_amends_id_key": Violation(
        Conflict, "amends_id", "That record has already been amended; amend its latest version."),
    "medical_records_type_check": Violation(Invalid, "type", "type is not allowed."),
    "medical_records_body_check": Violation(Invalid, "body", "body is too large."),
    "biometric_readings_kind_check": Violation(Invalid, "kind", "kind is not allowed."),
    "biometric_readings_unit_check": Violation(Invalid, "unit", "unit is not allowed."),
    "biometric_readings_value_check": Violation(Invalid, "value", "value is not allowed."),
    "biometric_readings_source_device_check": Violation(Invalid, "source_device", "source_device is not allowed."),
    "alert_rules_kind_check": Violation(Invalid, "kind", "kind is not allowed."),
    "alert_rules_severity_check": Violation(Invalid, "severity", "severity is not allowed."),
    "alert_rules_bounds_check": Violation(Invalid, "max_value", "max_value is not allowed."),
    "alerts_status_check": Violation(Invalid, "status", "status is not allowed."),
}

# A violation of a constraint not in CONSTRAINTS (or of NOT NULL, which has no name): its kind only.
_UNLISTED = (
    (pg.UniqueViolation, Conflict, "Another record already has this value."),
    (pg.ForeignKeyViolation, Invalid, "A referenced record does not exist."),
    (pg.ExclusionViolation, Conflict, "This value overlaps another record."),
    ((pg.CheckViolation, pg.NotNullViolation), Invalid, "A value is not allowed."),
)


def violation(constraint: str) -> ClarityError:
    """The domain error for breaking ``constraint`` (a key of CONSTRAINTS; KeyError otherwise),
    for a statement that lets the constraint decide without raising (ON CONFLICT DO NOTHING, a
    guarded INSERT ... SELECT) and so answers no row instead."""
    return CONSTRAINTS[constraint]()


def translate(exc: Exception) -> ClarityError | None:
    """Map a psycopg or pool error to a domain error; None when it is not ours to translate.
    A constraint violation becomes its CONSTRAINTS entry, else an error of its kind naming no field."""
    if isinstance(exc, PoolTimeout):
        return Unavailable("No database connection is free; retry shortly.", retry_after=1)
    if not isinstance(exc, psycopg.Error):
        return None
    metrics.count_database_error(exc)
    if isinstance(exc, pg.IntegrityError):
        listed = CONSTRAINTS.get(exc.diag.constraint_name or "")
        if listed is not None:
            return listed()
        for kinds, error, detail in _UNLISTED:
            if isinstance(exc, kinds):
                return error(detail)
    if isinstance(exc, (pg.StringDataRightTruncation, pg.NumericValueOutOfRange,
                        pg.InvalidTextRepresentation, pg.UntranslatableCharacter,
                        pg.CharacterNotInRepertoire, pg.DatetimeFieldOverflow)):
        return Invalid("A value is out of range or malformed.")
    if isinstance(exc, pg.QueryCanceled):
        return Unavailable("The database took too long to answer; retry shortly.")
    if isinstance(exc, (pg.LockNotAvailable, pg.SerializationFailure, pg.DeadlockDetected)):
        return Unavailable("The record is busy; retry shortly.")
    # A read-only server (a standby, reached without target_session_attrs=read-write) is a 503 too.
    if isinstance(exc, (psycopg.OperationalError, pg.AdminShutdown, pg.CannotConnectNow,
                        pg.ReadOnlySqlTransaction)):
        return Unavailable()
    return None
