"""Settings read from the environment (12-factor); nothing is read at import time."""
from __future__ import annotations

import base64
import dataclasses
import math
import os
from collections.abc import Mapping

from clarity import logs


class ConfigError(RuntimeError):
    """The environment does not describe a runnable service."""


@dataclasses.dataclass(frozen=True)
class Settings:
    env: str = "development"
    database_url: str | None = None
    migration_database_url: str | None = None
    db_allow_plaintext: bool = False  # production: allow a TCP database URL weaker than verify-full
    # DATABASE_URL reaches PostgreSQL through a transaction pooler (PgBouncer pool_mode=transaction):
    # no server-side prepared statements, no startup options (README, "Through PgBouncer").
    db_transaction_pooling: bool = False
    pool_min_size: int = 2
    pool_max_size: int = 8
    pool_timeout: float = 3.0
    pool_max_lifetime: float = 3600.0
    pool_max_idle: float = 600.0
    statement_timeout_ms: int = 5000
    # A streaming replica for the heavy reads (patient, biometric and audit-event lists); reads
    # fall back to the primary when it is unreachable or lags more than replica_max_lag_seconds
    # (clarity.replica.Replica; README, "Read replicas").
    database_replica_url: str | None = None
    replica_max_lag_seconds: float = 5.0
    data_keys: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    active_data_key: str | None = None
    blind_index_key: bytes | None = None
    blind_index_next_key: bytes | None = None
    token_idle_minutes: int = 15
    token_max_age_hours: int = 12
    # Sign-in throttling (clarity.services.auth): see README "Sign-in throttling".
    login_failure_window_seconds: int = 900
    login_max_failures_per_pair: int = 5
    login_max_failures_per_address: int = 100
    login_account_backoff_after: int = 10
    login_account_backoff_max_seconds: int = 900
    login_account_window_seconds: int = 86400
    login_familiar_address_days: int = 30
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    proxy_count: int = 0
    emergency_access_minutes: int = 60
    log_level: str = "INFO"
    log_format: str = "text"  # "text" or "json" (clarity.logs); from_env defaults to json in production
    audit_seal_interval_seconds: float = 5.0  # 0 disables the background sealer
    redis_url: str | None = None  # rate-limit counters; None keeps them in each process
    rate_limit: str = "600 per minute"  # per principal (a signed-in user)
    rate_limit_anonymous: str = "120 per minute"  # per client address (sign-in)
    rate_limit_expensive_cost: int = 10  # what a search, a scanning list or a batch ingest counts
    rate_limit_enabled: bool = True
    # How long the answer to a write with an Idempotency-Key is kept for its retries (clarity.api.idempotency).
    idempotency_ttl_seconds: int = 86400
    # Patient documents (clarity.services.documents): the largest upload, and the media types
    # accepted, each one whose content Clarity can check (services.documents.SIGNATURES).
    document_max_bytes: int = 25 * 1024 * 1024
    document_types: tuple[str, ...] = ("application/pdf", "image/png", "image/jpeg", "image/tiff",
                                       "application/dicom", "text/plain")

    def session_options(self, statement_timeout_ms: int) -> dict:
        """psycopg connection options for this deployment: the statement timeout as a startup
        option, or, through a transaction pooler (which refuses startup options, and where a
        statement prepared on one server connection is missing on the next), no prepared
        statements and the role's own statement_timeout (README, "Through PgBouncer")."""
        if self.db_transaction_pooling:
            return {"prepare_threshold": None}
        return {"options": f"-c statement_timeout={int(statement_timeout_ms)}"}

    @property
    def conninfo(self) -> str:
        return self.database_url or ""


_INT_FIELDS = {
    "CLARITY_DB_POOL_MIN": "pool_min_size",
    "CLARITY_DB_POOL_MAX": "pool_max_size",
    "CLARITY_STATEMENT_TIMEOUT_MS": "statement_timeout_ms",
    "CLARITY_TOKEN_IDLE_MINUTES": "token_idle_minutes",
    "CLARITY_TOKEN_MAX_AGE_HOURS": "token_max_age_hours",
    "CLARITY_LOGIN_FAILURE_WINDOW_SECONDS": "login_failure_window_seconds",
    "CLARITY_LOGIN_MAX_FAILURES_PER_PAIR": "login_max_failures_per_pair",
    "CLARITY_LOGIN_MAX_FAILURES_PER_ADDRESS": "login_max_failures_per_address",
    "CLARITY_LOGIN_ACCOUNT_BACKOFF_AFTER": "login_account_backoff_after",
    "CLARITY_LOGIN_ACCOUNT_BACKOFF_MAX_SECONDS": "login_account_backoff_max_seconds",
    "CLARITY_LOGIN_ACCOUNT_WINDOW_SECONDS": "login_account_window_seconds",
    "CLARITY_LOGIN_FAMILIAR_ADDRESS_DAYS": "login_familiar_address_days",
    "CLARITY_ARGON2_TIME_COST": "argon2_time_cost",
    "CLARITY_ARGON2_MEMORY_KIB": "argon2_memory_kib",
    "CLARITY_PROXY_COUNT": "proxy_count",
    "CLARITY_EMERGENCY_ACCESS_MINUTES": "emergency_access_minutes",
    "CLARITY_RATE_LIMIT_EXPENSIVE_COST": "rate_limit_expensive_cost",
    "CLARITY_IDEMPOTENCY_TTL_SECONDS": "idempotency_ttl_seconds",
    "CLARITY_DOCUMENT_MAX_BYTES": "document_max_bytes",
}
# Settings that no longer exist: refused by name, so an operator who relied on one learns what
# replaced it instead of having it silently ignored.
_REMOVED = {
    "CLARITY_LOGIN_MAX_FAILURES": "the account lockout is gone: use CLARITY_LOGIN_MAX_FAILURES_PER_PAIR "
                                  "and CLARITY_LOGIN_ACCOUNT_BACKOFF_AFTER",
}
# At least 1: a limit of 0 would refuse every sign-in (0 familiar-address days means none).
_LOGIN_MINIMUMS = {var: field for var, field in _INT_FIELDS.items()
                   if var.startswith("CLARITY_LOGIN_") and var != "CLARITY_LOGIN_FAMILIAR_ADDRESS_DAYS"}
_FLOAT_FIELDS = {
    "CLARITY_DB_POOL_TIMEOUT": "pool_timeout",
    "CLARITY_DB_POOL_MAX_LIFETIME": "pool_max_lifetime",
    "CLARITY_DB_POOL_MAX_IDLE": "pool_max_idle",
    "CLARITY_AUDIT_SEAL_INTERVAL_SECONDS": "audit_seal_interval_seconds",
    "CLARITY_REPLICA_MAX_LAG_SECONDS": "replica_max_lag_seconds",
}


def decode_key(text: str, name: str) -> bytes:
    """Decode a urlsafe-base64 32-byte key; raise ConfigError naming the variable, never the key."""
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (ValueError, TypeError):
        raise ConfigError(f"{name} is not valid base64") from None
    if len(key) != 32:
        raise ConfigError(f"{name} must decode to 32 bytes")
    return key


def parse_data_keys(text: str) -> dict[str, bytes]:
    """Parse ``kid:key,kid:key`` into a dict of key id -> 32-byte key."""
    keys = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kid, sep, key = item.partition(":")
        if not sep or not kid:
            raise ConfigError("CLARITY_DATA_KEYS entries must look like key_id:base64key")
        if kid in keys:
            raise ConfigError(f"CLARITY_DATA_KEYS lists key id {kid!r} twice")
        keys[kid] = decode_key(key, f"CLARITY_DATA_KEYS[{kid}]")
    return keys


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from environment variables; raise ConfigError on a bad value."""
    environ = os.environ if environ is None else environ
    values: dict = {"env": environ.get("CLARITY_ENV", "development")}
    values["database_url"] = environ.get("DATABASE_URL") or None
    values["migration_database_url"] = environ.get("CLARITY_MIGRATION_DATABASE_URL") or None
    values["database_replica_url"] = environ.get("CLARITY_DATABASE_REPLICA_URL") or None
    if environ.get("CLARITY_REPLICA_MAX_LAG_SECONDS") and not values["database_replica_url"]:
        raise ConfigError("CLARITY_REPLICA_MAX_LAG_SECONDS does nothing without CLARITY_DATABASE_REPLICA_URL")
    values["log_level"] = environ.get("CLARITY_LOG_LEVEL", "INFO").upper()
    values["log_format"] = environ.get("CLARITY_LOG_FORMAT") or logs.default_format(values["env"])
    values["redis_url"] = environ.get("REDIS_URL") or None
    if environ.get("CLARITY_DOCUMENT_TYPES"):
        values["document_types"] = tuple(dict.fromkeys(
            kind.strip().lower() for kind in environ["CLARITY_DOCUMENT_TYPES"].split(",") if kind.strip()))
    for var, field in (("CLARITY_RATE_LIMIT", "rate_limit"), ("CLARITY_RATE_LIMIT_ANONYMOUS", "rate_limit_anonymous")):
        if environ.get(var):
            values[field] = environ[var]
    if environ.get("CLARITY_DB_ALLOW_PLAINTEXT"):
        values["db_allow_plaintext"] = _flag(environ["CLARITY_DB_ALLOW_PLAINTEXT"], "CLARITY_DB_ALLOW_PLAINTEXT")
    if environ.get("CLARITY_DB_TRANSACTION_POOLING"):
        values["db_transaction_pooling"] = _flag(environ["CLARITY_DB_TRANSACTION_POOLING"],
                                                 "CLARITY_DB_TRANSACTION_POOLING")
        if values["db_transaction_pooling"] and environ.get("CLARITY_STATEMENT_TIMEOUT_MS"):
            # It travels as a startup option, which PgBouncer refuses; left out, it would be
            # silently ignored.
            raise ConfigError("CLARITY_STATEMENT_TIMEOUT_MS cannot reach PostgreSQL through a transaction pooler: "
                              "set statement_timeout on the app role (ALTER ROLE … SET statement_timeout)")
    if environ.get("CLARITY_RATE_LIMIT_ENABLED"):
        values["rate_limit_enabled"] = _flag(environ["CLARITY_RATE_LIMIT_ENABLED"], "CLARITY_RATE_LIMIT_ENABLED")
    for var, replacement in _REMOVED.items():
        if environ.get(var):
            raise ConfigError(f"{var} is no longer supported; {replacement}")
    for var, field in _INT_FIELDS.items():
        if environ.get(var):
            values[field] = _number(environ[var], var, int)
    for var, field in _FLOAT_FIELDS.items():
        if environ.get(var):
            values[field] = _number(environ[var], var, float)
    if environ.get("CLARITY_DATA_KEYS"):
        values["data_keys"] = parse_data_keys(environ["CLARITY_DATA_KEYS"])
        values["active_data_key"] = environ.get("CLARITY_ACTIVE_DATA_KEY") or next(iter(values["data_keys"]))
    for var, field in (("CLARITY_BLIND_INDEX_KEY", "blind_index_key"),
                       ("CLARITY_BLIND_INDEX_NEXT_KEY", "blind_index_next_key")):
        if environ.get(var):
            values[field] = decode_key(environ[var], var)
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Refuse settings the service cannot run with; production needs a database URL and keys."""
    if settings.active_data_key and settings.active_data_key not in settings.data_keys:
        raise ConfigError("CLARITY_ACTIVE_DATA_KEY names a key that is not in CLARITY_DATA_KEYS")
    if settings.pool_min_size < 0 or settings.pool_max_size < max(1, settings.pool_min_size):
        raise ConfigError("CLARITY_DB_POOL_MAX must be at least 1 and at least CLARITY_DB_POOL_MIN")
    if settings.log_format not in logs.FORMATS:
        raise ConfigError(f"CLARITY_LOG_FORMAT must be one of: {', '.join(logs.FORMATS)}")
    for var, field in _LOGIN_MINIMUMS.items():
        if getattr(settings, field) < 1:
            raise ConfigError(f"{var} must be at least 1")
    for var, text in (("CLARITY_RATE_LIMIT", settings.rate_limit),
                      ("CLARITY_RATE_LIMIT_ANONYMOUS", settings.rate_limit_anonymous)):
        _rate_limit(text, var)
    if not 0 <= settings.replica_max_lag_seconds < math.inf:  # NaN fails too
        raise ConfigError("CLARITY_REPLICA_MAX_LAG_SECONDS must be a finite number of seconds, 0 or more")
    if settings.rate_limit_expensive_cost < 1:
        raise ConfigError("CLARITY_RATE_LIMIT_EXPENSIVE_COST must be at least 1")
    if settings.idempotency_ttl_seconds < 1:
        raise ConfigError("CLARITY_IDEMPOTENCY_TTL_SECONDS must be at least 1")
    _document_limits(settings)
    if settings.env == "production":
        missing = [name for name, value in (
            ("DATABASE_URL", settings.database_url),
            ("CLARITY_DATA_KEYS", settings.data_keys),
            ("CLARITY_BLIND_INDEX_KEY", settings.blind_index_key),
        ) if not value]
        if missing:
            raise ConfigError("production refuses to start without " + ", ".join(missing))
        if not settings.db_allow_plaintext:
            for var, url in (("DATABASE_URL", settings.database_url),
                             ("CLARITY_MIGRATION_DATABASE_URL", settings.migration_database_url),
                             ("CLARITY_DATABASE_REPLICA_URL", settings.database_replica_url)):
                _require_verified_tls(url, var)


def _document_limits(settings: Settings) -> None:
    """Refuse a document size limit under one byte, and a media type whose content Clarity
    cannot check against its declared type (an upload is refused unless its first bytes match)."""
    from clarity.services.documents import SIGNATURES

    if settings.document_max_bytes < 1:
        raise ConfigError("CLARITY_DOCUMENT_MAX_BYTES must be at least 1")
    unknown = [kind for kind in settings.document_types if kind not in SIGNATURES]
    if unknown or not settings.document_types:
        raise ConfigError("CLARITY_DOCUMENT_TYPES must list media types among: " + ", ".join(SIGNATURES))


def _require_verified_tls(url: str | None, var: str) -> None:
    """Refuse a connection string that reaches PostgreSQL over TCP with an sslmode weaker than
    ``verify-full`` (none given means libpq's ``prefer``). Unix sockets pass: they never leave the
    machine. The message names ``var``, never the URL, which may hold a password."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    if not url:
        return
    try:
        params = conninfo_to_dict(url)
    except ProgrammingError:
        raise ConfigError(f"{var} is not a valid PostgreSQL connection string") from None
    if not _uses_tcp(params):
        return
    sslmode = str(params.get("sslmode") or "prefer")
    if sslmode != "verify-full":
        raise ConfigError(
            f"{var} connects over TCP with sslmode={sslmode}: production needs sslmode=verify-full "
            "(and sslrootcert naming the server's CA), a Unix socket, or CLARITY_DB_ALLOW_PLAINTEXT=1")


def _uses_tcp(params: Mapping[str, object]) -> bool:
    """Whether any host of a (possibly multi-host) connection is reached over TCP. No host at
    all means libpq's default Unix socket; a host starting with ``/`` names a socket directory."""
    if params.get("hostaddr"):
        return True
    hosts = str(params.get("host") or "").split(",")
    return any(host and not host.startswith("/") for host in hosts)


def _number(text: str, var: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{var} must be a number") from None
    if value < 0:
        raise ConfigError(f"{var} must not be negative")
    return value


def _flag(text: str, var: str) -> bool:
    value = text.strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"{var} must be 1 or 0")
    return value in ("1", "true", "yes", "on")


def _rate_limit(text: str, var: str) -> None:
    """Refuse a rate limit flask-limiter cannot read, such as ``600 per minute`` or ``10/second``."""
    from limits import parse_many

    try:
        if not parse_many(text):
            raise ValueError
    except ValueError:
        raise ConfigError(f"{var} must look like '600 per minute' (several: '10/second; 600/minute')") from None
