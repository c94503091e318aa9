"""Settings from the environment: defaults, parsing, key handling, and production's refusals."""
from __future__ import annotations

import base64
import os

import pytest

from clarity.config import ConfigError, Settings, from_env


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


KEY_A, KEY_B, BLIND = os.urandom(32), os.urandom(32), os.urandom(32)

PRODUCTION = {
    "CLARITY_ENV": "production",
    "DATABASE_URL": "postgresql://clarity_web@db/clarity?sslmode=verify-full&sslrootcert=/etc/clarity/db-ca.pem",
    "CLARITY_DATA_KEYS": f"a:{b64(KEY_A)}",
    "CLARITY_BLIND_INDEX_KEY": b64(BLIND),
}


def test_an_empty_environment_gives_the_development_defaults():
    settings = from_env({})

    assert settings == Settings()
    assert settings.env == "development"
    assert settings.database_url is None
    assert settings.pool_max_size == 8 and settings.pool_timeout == 3.0
    assert settings.data_keys == {} and settings.active_data_key is None
    assert settings.blind_index_key is None
    assert settings.log_level == "INFO"


def test_from_env_does_not_read_the_process_environment_when_given_a_mapping(monkeypatch):
    monkeypatch.setenv("CLARITY_DB_POOL_MAX", "99")

    assert from_env({}).pool_max_size == 8


def test_empty_values_count_as_unset():
    settings = from_env({"DATABASE_URL": "", "CLARITY_DB_POOL_MAX": "", "CLARITY_DATA_KEYS": ""})

    assert settings.database_url is None
    assert settings.pool_max_size == 8
    assert settings.data_keys == {}


def test_numbers_are_parsed_into_their_types():
    settings = from_env({
        "CLARITY_DB_POOL_MIN": "3", "CLARITY_DB_POOL_MAX": "16", "CLARITY_DB_POOL_TIMEOUT": "1.5",
        "CLARITY_DB_POOL_MAX_LIFETIME": "1800", "CLARITY_STATEMENT_TIMEOUT_MS": "2500",
        "CLARITY_TOKEN_IDLE_MINUTES": "10", "CLARITY_ARGON2_MEMORY_KIB": "19456",
        "CLARITY_LOG_LEVEL": "debug", "DATABASE_URL": "postgresql://u@h/d",
    })

    assert (settings.pool_min_size, settings.pool_max_size) == (3, 16)
    assert settings.pool_timeout == 1.5 and isinstance(settings.pool_timeout, float)
    assert settings.pool_max_lifetime == 1800.0
    assert settings.statement_timeout_ms == 2500 and isinstance(settings.statement_timeout_ms, int)
    assert settings.token_idle_minutes == 10
    assert settings.argon2_memory_kib == 19456
    assert settings.log_level == "DEBUG"
    assert settings.conninfo == "postgresql://u@h/d"


@pytest.mark.parametrize("var, value", [
    ("CLARITY_DB_POOL_MAX", "eight"),
    ("CLARITY_DB_POOL_MAX", "2.5"),
    ("CLARITY_DB_POOL_TIMEOUT", "soon"),
    ("CLARITY_STATEMENT_TIMEOUT_MS", "5s"),
    ("CLARITY_LOGIN_MAX_FAILURES_PER_PAIR", "-1"),
    ("CLARITY_LOGIN_ACCOUNT_BACKOFF_MAX_SECONDS", "15m"),
])
def test_a_bad_number_is_a_config_error_naming_the_variable(var, value):
    with pytest.raises(ConfigError) as raised:
        from_env({var: value})

    assert var in str(raised.value)


def test_the_sign_in_throttles_default_to_pair_account_and_address_limits():
    settings = from_env({})

    assert settings.login_failure_window_seconds == 900
    assert settings.login_max_failures_per_pair == 5
    assert settings.login_max_failures_per_address == 100
    assert (settings.login_account_backoff_after, settings.login_account_backoff_max_seconds) == (10, 900)
    assert settings.login_account_window_seconds == 86400
    assert settings.login_familiar_address_days == 30


def test_the_sign_in_throttles_are_set_from_the_environment():
    settings = from_env({
        "CLARITY_LOGIN_FAILURE_WINDOW_SECONDS": "600", "CLARITY_LOGIN_MAX_FAILURES_PER_PAIR": "3",
        "CLARITY_LOGIN_MAX_FAILURES_PER_ADDRESS": "50", "CLARITY_LOGIN_ACCOUNT_BACKOFF_AFTER": "8",
        "CLARITY_LOGIN_ACCOUNT_BACKOFF_MAX_SECONDS": "300", "CLARITY_LOGIN_ACCOUNT_WINDOW_SECONDS": "3600",
        "CLARITY_LOGIN_FAMILIAR_ADDRESS_DAYS": "0",
    })

    assert settings.login_failure_window_seconds == 600
    assert settings.login_max_failures_per_pair == 3
    assert settings.login_max_failures_per_address == 50
    assert (settings.login_account_backoff_after, settings.login_account_backoff_max_seconds) == (8, 300)
    assert settings.login_account_window_seconds == 3600
    assert settings.login_familiar_address_days == 0


@pytest.mark.parametrize("var", ["CLARITY_LOGIN_FAILURE_WINDOW_SECONDS", "CLARITY_LOGIN_MAX_FAILURES_PER_PAIR",
                                 "CLARITY_LOGIN_MAX_FAILURES_PER_ADDRESS", "CLARITY_LOGIN_ACCOUNT_BACKOFF_AFTER",
                                 "CLARITY_LOGIN_ACCOUNT_BACKOFF_MAX_SECONDS", "CLARITY_LOGIN_ACCOUNT_WINDOW_SECONDS"])
def test_a_sign_in_limit_of_zero_is_refused(var):
    with pytest.raises(ConfigError, match=var):
        from_env({var: "0"})


def test_the_removed_account_lockout_setting_is_refused_naming_its_replacements():
    with pytest.raises(ConfigError) as raised:
        from_env({"CLARITY_LOGIN_MAX_FAILURES": "5"})

    message = str(raised.value)
    assert "CLARITY_LOGIN_MAX_FAILURES " in message
    assert "CLARITY_LOGIN_MAX_FAILURES_PER_PAIR" in message and "CLARITY_LOGIN_ACCOUNT_BACKOFF_AFTER" in message


def test_a_pool_smaller_than_its_minimum_is_refused():
    with pytest.raises(ConfigError, match="CLARITY_DB_POOL_MAX"):
        from_env({"CLARITY_DB_POOL_MIN": "5", "CLARITY_DB_POOL_MAX": "2"})


def test_data_keys_are_parsed_and_the_first_is_active_by_default():
    settings = from_env({"CLARITY_DATA_KEYS": f"a:{b64(KEY_A)}, b:{b64(KEY_B)}"})

    assert settings.data_keys == {"a": KEY_A, "b": KEY_B}
    assert settings.active_data_key == "a"


def test_the_active_data_key_can_be_chosen():
    settings = from_env({"CLARITY_DATA_KEYS": f"a:{b64(KEY_A)},b:{b64(KEY_B)}", "CLARITY_ACTIVE_DATA_KEY": "b"})

    assert settings.active_data_key == "b"


def test_padded_base64_keys_are_accepted():
    padded = base64.urlsafe_b64encode(KEY_A).decode()
    assert padded.endswith("=")

    assert from_env({"CLARITY_DATA_KEYS": f"a:{padded}"}).data_keys == {"a": KEY_A}


def test_an_active_data_key_that_is_not_configured_is_refused():
    with pytest.raises(ConfigError, match="CLARITY_ACTIVE_DATA_KEY"):
        from_env({"CLARITY_DATA_KEYS": f"a:{b64(KEY_A)}", "CLARITY_ACTIVE_DATA_KEY": "b"})


def test_a_data_key_entry_without_an_id_is_refused():
    with pytest.raises(ConfigError, match="CLARITY_DATA_KEYS") as raised:
        from_env({"CLARITY_DATA_KEYS": b64(KEY_A)})

    assert b64(KEY_A) not in str(raised.value)


@pytest.mark.parametrize("length", [16, 31, 33, 64])
def test_a_data_key_of_the_wrong_length_is_refused_without_echoing_the_key(length):
    short = b64(os.urandom(length))

    with pytest.raises(ConfigError) as raised:
        from_env({"CLARITY_DATA_KEYS": f"a:{b64(KEY_A)},b:{short}"})

    message = str(raised.value)
    assert "CLARITY_DATA_KEYS[b]" in message and "32 bytes" in message
    assert short not in message and short[:8] not in message


def test_a_blind_index_key_that_is_not_base64_is_refused_without_echoing_it():
    garbage = "this-is-not*base64!"

    with pytest.raises(ConfigError) as raised:
        from_env({"CLARITY_BLIND_INDEX_KEY": garbage})

    assert "CLARITY_BLIND_INDEX_KEY" in str(raised.value)
    assert garbage not in str(raised.value)


def test_production_with_a_database_and_keys_starts():
    settings = from_env(PRODUCTION)

    assert settings.env == "production"
    assert settings.data_keys == {"a": KEY_A} and settings.active_data_key == "a"
    assert settings.blind_index_key == BLIND


@pytest.mark.parametrize("missing", ["DATABASE_URL", "CLARITY_DATA_KEYS", "CLARITY_BLIND_INDEX_KEY"])
def test_production_refuses_to_start_without_its_database_or_keys(missing):
    environ = {k: v for k, v in PRODUCTION.items() if k != missing}

    with pytest.raises(ConfigError) as raised:
        from_env(environ)

    message = str(raised.value)
    assert missing in message
    assert all(other not in message for other in PRODUCTION if other not in (missing, "CLARITY_ENV"))


def test_production_names_everything_that_is_missing_at_once():
    with pytest.raises(ConfigError) as raised:
        from_env({"CLARITY_ENV": "production"})

    message = str(raised.value)
    assert "DATABASE_URL" in message and "CLARITY_DATA_KEYS" in message and "CLARITY_BLIND_INDEX_KEY" in message


def test_development_without_keys_is_allowed():
    assert from_env({"CLARITY_ENV": "development"}).data_keys == {}


PASSWORD = "s3cret-Pa55word"


def production_with(**urls) -> dict:
    return {**PRODUCTION, **urls}


@pytest.mark.parametrize("url", [
    "postgresql://clarity_web@db.internal/clarity?sslmode=verify-full&sslrootcert=/etc/clarity/db-ca.pem",
    "host=db.internal dbname=clarity user=clarity_web sslmode=verify-full sslrootcert=/etc/clarity/db-ca.pem",
    "postgresql://clarity_web@db1,db2/clarity?sslmode=verify-full&target_session_attrs=read-write",
])
def test_production_accepts_a_tcp_database_verified_with_verify_full(url):
    settings = from_env(production_with(DATABASE_URL=url))

    assert settings.database_url == url  # kept as given: libpq reads sslmode and sslrootcert from it


@pytest.mark.parametrize("var", ["DATABASE_URL", "CLARITY_MIGRATION_DATABASE_URL"])
@pytest.mark.parametrize("query, sslmode", [
    ("?sslmode=require", "require"), ("?sslmode=verify-ca", "verify-ca"), ("?sslmode=prefer", "prefer"),
    ("?sslmode=disable", "disable"), ("?sslmode=allow", "allow"), ("", "prefer"),
])
def test_production_refuses_a_tcp_database_weaker_than_verify_full_naming_the_variable_not_the_password(
        var, query, sslmode):
    url = f"postgresql://clarity_web:{PASSWORD}@db.internal:5432/clarity{query}"

    with pytest.raises(ConfigError) as raised:
        from_env(production_with(**{var: url}))

    message = str(raised.value)
    assert var in message and f"sslmode={sslmode}" in message and "verify-full" in message
    assert PASSWORD not in message and "db.internal" not in message


def test_production_refuses_a_multi_host_url_when_any_host_is_tcp():
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        from_env(production_with(DATABASE_URL="postgresql://clarity_web@%2Frun%2Fpostgresql,db.internal/clarity"))


def test_production_refuses_hostaddr_without_verify_full_even_beside_a_socket_host():
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        from_env(production_with(DATABASE_URL="host=/run/postgresql hostaddr=10.0.0.5 dbname=clarity"))


def test_an_unparseable_database_url_is_refused_without_echoing_it():
    url = f"user=clarity_web password={PASSWORD} host"

    with pytest.raises(ConfigError) as raised:
        from_env(production_with(DATABASE_URL=url))

    assert "DATABASE_URL" in str(raised.value) and PASSWORD not in str(raised.value)


@pytest.mark.parametrize("flag", ["1", "true", "yes"])
def test_production_allows_plaintext_to_the_database_when_told_to(flag):
    url = "postgresql://clarity_web@db.internal/clarity?sslmode=disable"

    settings = from_env(production_with(DATABASE_URL=url, CLARITY_MIGRATION_DATABASE_URL=url,
                                        CLARITY_DB_ALLOW_PLAINTEXT=flag))

    assert settings.db_allow_plaintext and settings.database_url == url


def test_allow_plaintext_set_to_0_still_refuses():
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        from_env(production_with(DATABASE_URL="postgresql://clarity_web@db.internal/clarity",
                                 CLARITY_DB_ALLOW_PLAINTEXT="0"))


def test_allow_plaintext_must_be_a_flag():
    with pytest.raises(ConfigError, match="CLARITY_DB_ALLOW_PLAINTEXT"):
        from_env(production_with(CLARITY_DB_ALLOW_PLAINTEXT="sometimes"))


@pytest.mark.parametrize("url", [
    "postgresql://clarity_web@/clarity",
    "postgresql:///clarity?host=/run/postgresql",
    "postgresql://clarity_web@%2Frun%2Fpostgresql/clarity",
    "host=/run/postgresql dbname=clarity",
    "dbname=clarity",
])
def test_production_accepts_a_unix_socket_without_tls(url):
    assert from_env(production_with(DATABASE_URL=url, CLARITY_MIGRATION_DATABASE_URL=url)).database_url == url


def test_development_may_use_plaintext_tcp():
    url = "postgresql://clarity_web@db.internal/clarity?sslmode=disable"

    settings = from_env({"DATABASE_URL": url, "CLARITY_MIGRATION_DATABASE_URL": url})

    assert settings.env == "development" and settings.database_url == url


def test_transaction_pooling_is_off_unless_set():
    assert from_env({}).db_transaction_pooling is False
    assert from_env({"CLARITY_DB_TRANSACTION_POOLING": "0"}).db_transaction_pooling is False


@pytest.mark.parametrize("flag", ["1", "true", "on"])
def test_transaction_pooling_is_set_from_the_environment(flag):
    assert from_env({"CLARITY_DB_TRANSACTION_POOLING": flag}).db_transaction_pooling is True


def test_transaction_pooling_must_be_a_flag():
    with pytest.raises(ConfigError, match="CLARITY_DB_TRANSACTION_POOLING"):
        from_env({"CLARITY_DB_TRANSACTION_POOLING": "pgbouncer"})


def test_a_statement_timeout_that_a_transaction_pooler_would_drop_is_refused_pointing_at_the_role():
    with pytest.raises(ConfigError, match="CLARITY_STATEMENT_TIMEOUT_MS .* set statement_timeout on the app role"):
        from_env({"CLARITY_DB_TRANSACTION_POOLING": "1", "CLARITY_STATEMENT_TIMEOUT_MS": "2000"})
    assert from_env({"CLARITY_DB_TRANSACTION_POOLING": "0",
                     "CLARITY_STATEMENT_TIMEOUT_MS": "2000"}).statement_timeout_ms == 2000


def test_logs_are_text_in_development_and_json_in_production_unless_chosen():
    assert from_env({}).log_format == "text"
    assert from_env(PRODUCTION).log_format == "json"
    assert from_env({**PRODUCTION, "CLARITY_LOG_FORMAT": "text"}).log_format == "text"
    assert from_env({"CLARITY_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="CLARITY_LOG_FORMAT"):
        from_env({"CLARITY_LOG_FORMAT": "xml"})


def test_a_read_replica_is_off_by_default_and_its_lag_limit_is_five_seconds():
    settings = from_env({})

    assert settings.database_replica_url is None
    assert settings.replica_max_lag_seconds == 5.0


def test_the_read_replica_url_and_its_lag_limit_are_read():
    settings = from_env({"CLARITY_DATABASE_REPLICA_URL": "postgresql://u@replica/d",
                         "CLARITY_REPLICA_MAX_LAG_SECONDS": "1.5"})

    assert settings.database_replica_url == "postgresql://u@replica/d"
    assert settings.replica_max_lag_seconds == 1.5


@pytest.mark.parametrize("value, message", [
    ("soon", "must be a number"),
    ("-1", "must not be negative"),
    ("nan", "finite"),
    ("inf", "finite"),
])
def test_a_bad_replica_lag_limit_is_a_config_error_naming_the_variable(value, message):
    with pytest.raises(ConfigError, match=message) as raised:
        from_env({"CLARITY_DATABASE_REPLICA_URL": "postgresql://u@replica/d", "CLARITY_REPLICA_MAX_LAG_SECONDS": value})

    assert "CLARITY_REPLICA_MAX_LAG_SECONDS" in str(raised.value)


def test_a_replica_lag_limit_without_a_replica_is_refused_rather_than_ignored():
    with pytest.raises(ConfigError, match="CLARITY_DATABASE_REPLICA_URL"):
        from_env({"CLARITY_REPLICA_MAX_LAG_SECONDS": "2"})


def test_production_refuses_a_replica_reached_over_tcp_without_verified_tls():
    with pytest.raises(ConfigError, match="CLARITY_DATABASE_REPLICA_URL connects over TCP with sslmode=require"):
        from_env({**PRODUCTION, "CLARITY_DATABASE_REPLICA_URL": "postgresql://u@replica/d?sslmode=require"})

    verified = "postgresql://u@replica/d?sslmode=verify-full&sslrootcert=/etc/clarity/db-ca.pem"
    assert from_env({**PRODUCTION, "CLARITY_DATABASE_REPLICA_URL": verified}).database_replica_url == verified
