"""One error vocabulary: domain errors, driver-error translation, and their HTTP status.

Messages are written for API clients: they name fields, never values, SQL, keys or PHI.
"""
from __future__ import annotations

import psycopg
from psycopg import errors as pg
from psycopg_pool import PoolTimeout


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


# Constraint name -> the API field it guards. Names follow <table>_<columns>_<kind>.
CONSTRAINT_FIELDS = {
    "patients_mrn_bidx_key": "mrn",
    "patients_mrn_bidx_rotating_key": "mrn",
    "users_email_key": "email",
    "patients_provider_id_fkey": "provider_id",
    "patients_birth_year_check": "date_of_birth",
    "patients_status_check": "status",
    "users_role_check": "role",
    "appointments_provider_id_starts_at_excl": "starts_at",
    "appointments_ends_at_check": "ends_at",
    "appointments_status_check": "status",
    "appointments_cancelled_at_check": "status",
    "appointments_patient_id_fkey": "patient_id",
    "appointments_provider_id_fkey": "provider_id",
    "medical_records_amends_id_fkey": "amends_id",
    "medical_records_amends_id_key": "amends_id",
    "medical_records_type_check": "type",
    "biometric_readings_kind_check": "kind",
    "biometric_readings_unit_check": "unit",
    "biometric_readings_value_check": "value",
    "biometric_readings_source_device_check": "source_device",
    "alert_rules_kind_check": "kind",
    "alert_rules_severity_check": "severity",
    "alert_rules_bounds_check": "max_value",
    "alerts_status_check": "status",
}


def translate(exc: Exception) -> ClarityError | None:
    """Map a psycopg or pool error to a domain error; None when it is not ours to translate."""
    if isinstance(exc, PoolTimeout):
        return Unavailable("No database connection is free; retry shortly.", retry_after=1)
    if not isinstance(exc, psycopg.Error):
        return None
    name = getattr(getattr(exc, "diag", None), "constraint_name", None)
    field = CONSTRAINT_FIELDS.get(name or "")
    if isinstance(exc, pg.UniqueViolation):
        return Conflict(f"Another record already has this {field or 'value'}.", field=field)
    if isinstance(exc, pg.ForeignKeyViolation):
        return Invalid(f"{field or 'A referenced record'} does not exist.", field=field)
    if isinstance(exc, pg.ExclusionViolation):
        return Conflict(f"This {field or 'value'} overlaps another record.", field=field)
    if isinstance(exc, (pg.CheckViolation, pg.NotNullViolation)):
        return Invalid(f"{field or 'A value'} is not allowed.", field=field)
    if isinstance(exc, (pg.StringDataRightTruncation, pg.NumericValueOutOfRange,
                        pg.InvalidTextRepresentation, pg.UntranslatableCharacter,
                        pg.CharacterNotInRepertoire, pg.DatetimeFieldOverflow)):
        return Invalid("A value is out of range or malformed.")
    if isinstance(exc, pg.QueryCanceled):
        return Unavailable("The database took too long to answer; retry shortly.")
    if isinstance(exc, (pg.LockNotAvailable, pg.SerializationFailure, pg.DeadlockDetected)):
        return Unavailable("The record is busy; retry shortly.")
    if isinstance(exc, (psycopg.OperationalError, pg.AdminShutdown, pg.CannotConnectNow)):
        return Unavailable()
    return None
