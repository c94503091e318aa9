"""migrations/0018 on a database that already holds readings: the patients that have readings
are carried into biometric_patients (so they stay undeletable once the foreign key is gone),
and the rollback gives back 0017's schema of biometric_readings exactly."""
from __future__ import annotations

import datetime as dt
import os
import uuid

import psycopg
import pytest
from psycopg import errors as pg
from psycopg import sql
from yoyo import get_backend, read_migrations

from clarity.db import MIGRATIONS_DIR
from clarity.schema import yoyo_url

MIGRATION = "0018_biometric_readings_cheaper_writes"
# biometric_readings' indexes and constraints, its and its partitions' triggers (not the foreign
# key's own), the partition function and biometric_patients, by definition.
SCHEMA = """
SELECT 'index ' || indexrelid::regclass || ' ' || pg_get_indexdef(indexrelid)
  FROM pg_index WHERE indrelid = 'biometric_readings'::regclass
UNION ALL
SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE conrelid = 'biometric_readings'::regclass
UNION ALL
SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname
  FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN (SELECT 'biometric_readings'::regclass
                                    UNION ALL SELECT inhrelid FROM pg_inherits
                                     WHERE inhparent = 'biometric_readings'::regclass)
UNION ALL
SELECT 'function ' || md5(prosrc) FROM pg_proc WHERE proname = 'clarity_create_biometric_partitions'
UNION ALL
SELECT 'table ' || relname FROM pg_class WHERE relname = 'biometric_patients'
"""


@pytest.fixture
def database(server):
    name = f"t_bio_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


def migrate(url, *, until=None, rollback=None):
    """Apply the migrations before ``until`` (all when None), or roll back ``rollback``."""
    backend = get_backend(yoyo_url(url))
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            if rollback:
                backend.rollback_migrations(backend.to_rollback(migrations).filter(lambda m: m.id == rollback))
            else:
                backend.apply_migrations(backend.to_apply(migrations).filter(lambda m: until is None or m.id < until))
    finally:
        backend.connection.close()


def schema(conn) -> set[str]:
    return {row[0] for row in conn.execute(SCHEMA)}


def test_0018_carries_the_patients_with_readings_and_its_rollback_restores_0017(database):
    migrate(database, until=MIGRATION)
    with psycopg.connect(database, autocommit=True) as owner:
        before = schema(owner)
        provider = owner.execute("INSERT INTO users (email, display_name, role, password_hash) "
                                 "VALUES ('m@clarity.test', 'M', 'provider', 'x') RETURNING id").fetchone()[0]
        with_readings, without = (owner.execute(
            "INSERT INTO patients (provider_id, birth_year, mrn_bidx, last_name_bidx, phi, phi_key_id) "
            "VALUES (%s, 1980, %s, %s, 'x', 'k') RETURNING id",
            (provider, os.urandom(32), os.urandom(32))).fetchone()[0] for _ in range(2))
        owner.execute("INSERT INTO biometric_readings (patient_id, recorded_at, value, kind, unit, source_device) "
                      "SELECT %s, now() - make_interval(mins => n), 70, 'heart_rate', 'bpm', 'w' "
                      "FROM generate_series(1, 3) n", (with_readings,))

    migrate(database)
    with psycopg.connect(database, autocommit=True) as owner:
        assert "constraint biometric_readings_patient_id_fkey FOREIGN KEY (patient_id) REFERENCES patients(id)" \
            not in schema(owner)
        assert owner.execute("SELECT array_agg(patient_id) FROM biometric_patients").fetchone() == ([with_readings],)
        with pytest.raises(pg.ForeignKeyViolation):
            owner.execute("DELETE FROM patients WHERE id = %s", (with_readings,))
        # New readings after the migration, in a partition it did not create.
        assert owner.execute("SELECT clarity_create_biometric_partitions(0, 6)").fetchone()[0] == 3
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=150)
        with pytest.raises(pg.ForeignKeyViolation):
            owner.execute(f"INSERT INTO biometric_readings_{later:%Y_%m} (patient_id, recorded_at, value, kind, unit, "
                          "source_device) VALUES (%s, %s, 70, 'heart_rate', 'bpm', 'w')", (uuid.uuid4(), later))

    migrate(database, rollback=MIGRATION)
    with psycopg.connect(database, autocommit=True) as owner:
        # The 3 partitions made since have 0010's shape again too (no triggers).
        assert schema(owner) == before
        with pytest.raises(pg.ForeignKeyViolation):
            owner.execute("DELETE FROM patients WHERE id = %s", (with_readings,))
        owner.execute("DELETE FROM patients WHERE id = %s", (without,))
