"""The tamper-evident audit trail: committed events are sealed into a hash chain in batches,
without serializing requests, and ``audit verify`` finds any change, deletion, rewrite or
out-of-order insertion.

Tests that seal run on their own database cloned from the migrated template, with real
commits; the app connects as the least-privileged role, the "attacker" as the owner (a
superuser here).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import json
import logging
import random
import runpy
import threading
import time
import types
import uuid

import psycopg
import pytest

from clarity import audit_chain, config, create_app, heartbeat, queries
from clarity.audit import AuditEvent
from clarity.db import MIGRATIONS_DIR
from clarity.errors import NotFound
from clarity.repositories.audit import EVENT_COLUMNS, AuditRepository
from tests.conftest import APP_ROLE, make_settings

GUNICORN_CONF = MIGRATIONS_DIR.parent / "gunicorn.conf.py"
AUDIT_SQL = queries.load().audit


@dataclasses.dataclass
class Chain:
    app: object
    db: object
    owner_url: str
    app_url: str

    def cli(self, *args):
        return self.app.test_cli_runner().invoke(args=["audit", *args])

    def owner(self):
        return psycopg.connect(self.owner_url, autocommit=True)


@pytest.fixture
def chain(server, fresh_database, keyring):
    app = create_app(make_settings(server, fresh_database, pool_max_size=12), keyring=keyring)
    database = app.extensions["clarity"].db
    yield Chain(app, database, server.url(fresh_database), server.url(fresh_database, APP_ROLE))
    database.close()


def commit_events(db, count=1, request_id=None) -> str:
    """Commit ``count`` audit events in one unit of work; return its request id."""
    request_id = request_id or f"req-{uuid.uuid4().hex[:10]}"

    def work(uow):
        for _ in range(count):
            uow.audit(AuditEvent("R", "patient.read", "patient", uuid.uuid4(), uuid.uuid4(), fields=("mrn",)))

    db.run(work, request_id=request_id)
    return request_id


def seal(db, **options):
    return db.run(lambda uow: audit_chain.seal(uow.audit_events, **options))


def seal_all(db) -> int:
    total = 0
    while (sealed := seal(db)) != 0:
        total += sealed or 0
    return total


def event_ids(conn, request_id) -> list[int]:
    return [row[0] for row in conn.execute(
        "SELECT id FROM audit_events WHERE request_id = %s ORDER BY id", (request_id,))]


def sealed_ids(conn) -> list[int]:
    return [row[0] for row in conn.execute("SELECT event_id FROM audit_seals ORDER BY seq")]


def tamper(conn, statement, params=()):
    """Change the trail the way its owner could: with the append-only triggers disabled."""
    with conn.transaction():
        conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        conn.execute("ALTER TABLE audit_seals DISABLE TRIGGER USER")
        conn.execute(statement, params)
        conn.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
        conn.execute("ALTER TABLE audit_seals ENABLE TRIGGER USER")


def seal_twelve(db, owner_url) -> list[int]:
    """Commit 12 events in 4 transactions and seal them; their ids in chain order."""
    for _ in range(4):
        commit_events(db, 3)
    assert seal_all(db) == 12
    with psycopg.connect(owner_url) as conn:
        return sealed_ids(conn)


@pytest.fixture
def sealed(chain):
    return seal_twelve(chain.db, chain.owner_url)


@dataclasses.dataclass
class Trail:
    app: object
    owner_url: str
    app_url: str
    ids: list[int]


@pytest.fixture(scope="module")
def trail(server, keyring):
    """A committed chain of 12 sealed events, shared by the tests that tamper with it inside
    a transaction they roll back (cheaper than a database each)."""
    name = server.create_database()
    app = create_app(make_settings(server, name), keyring=keyring)
    database = app.extensions["clarity"].db
    ids = seal_twelve(database, server.url(name))
    yield Trail(app, server.url(name), server.url(name, APP_ROLE), ids)
    database.close()
    server.drop_database(name)


@pytest.fixture
def attacker(trail):
    """The owner's connection, inside a transaction rolled back after the test."""
    with psycopg.connect(trail.owner_url, autocommit=True) as conn:
        with conn.transaction(force_rollback=True):
            yield conn


def verify_in(conn, **options) -> audit_chain.Problem | None:
    """The first problem ``verify`` finds as this connection sees the trail."""
    return audit_chain.verify(AuditRepository(conn, AUDIT_SQL), **options).problem


def test_canonical_encoding_is_compact_sorted_json_of_every_column_in_utc():
    event = {name: None for name in EVENT_COLUMNS} | {
        "id": 7, "xid": 812, "action": "R", "event_type": "patient.read", "outcome": "success",
        "occurred_at": dt.datetime(2024, 5, 1, 14, 30, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "fields": ["mrn"]}

    encoded = audit_chain.canonical(event)

    assert encoded.startswith(b'{"action":"R","actor_id":null,')
    assert b'"occurred_at":"2024-05-01T12:30:00.000005Z"' in encoded and b" " not in encoded
    for name in EVENT_COLUMNS:
        changed = event | {name: dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc) if name == "occurred_at" else ["x"]}
        assert audit_chain.chain_hash(audit_chain.GENESIS_HASH, changed) != audit_chain.chain_hash(audit_chain.GENESIS_HASH, event), name
    with pytest.raises(KeyError):
        audit_chain.canonical({k: v for k, v in event.items() if k != "client_addr"})


def test_concurrent_writers_and_sealers_seal_every_committed_event_exactly_once(chain):
    stop = threading.Event()
    sealed_while_writing = []

    def writer(n):
        kept, dropped = [], []
        for i in range(40):
            request_id = f"w{n}-{i}"

            def work(uow, i=i):
                uow.conn.execute("SELECT pg_current_xact_id()")  # take an xid now, commit later:
                time.sleep(random.uniform(0, 0.003))  # xid order and commit order then differ
                for _ in range(1 + i % 3):
                    uow.audit(AuditEvent("R", "patient.read", "patient", uuid.uuid4()))
                if i % 7 == 3:
                    raise RuntimeError("rolled back with its events")
                if i % 5 == 4:
                    raise NotFound("events kept as denied, in a transaction of their own")

            try:
                chain.db.run(work, request_id=request_id)
                kept.append(request_id)
            except RuntimeError:
                dropped.append(request_id)
            except NotFound:
                kept.append(request_id)
        return kept, dropped

    def sealer():
        while not stop.is_set():
            # Small, capped batches: many runs, each ending mid-backlog.
            sealed_while_writing.append(seal(chain.db, batch_size=7, max_batches=3) or 0)
            time.sleep(0.002)

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        sealers = [pool.submit(sealer) for _ in range(2)]
        results = [f.result(timeout=60) for f in [pool.submit(writer, n) for n in range(8)]]
        stop.set()
        for f in sealers:
            f.result(timeout=10)
    seal_all(chain.db)

    kept = [r for k, _ in results for r in k]
    dropped = [r for _, d in results for r in d]
    with chain.owner() as conn:
        events = conn.execute("SELECT count(*) FROM audit_events WHERE request_id = ANY(%s)", (kept,)).fetchone()[0]
        lost = conn.execute("SELECT count(*) FROM audit_events WHERE request_id = ANY(%s)", (dropped,)).fetchone()[0]
        seals = sealed_ids(conn)
        unsealed = conn.execute("SELECT count(*) FROM audit_events e WHERE NOT EXISTS "
                                "(SELECT 1 FROM audit_seals s WHERE s.event_id = e.id)").fetchone()[0]
    assert sum(sealed_while_writing) > 0, "the sealers never sealed while the writers wrote"
    assert events > 500 and dropped and lost == 0, "rolled-back events must vanish"
    assert len(seals) == len(set(seals)) == events and unsealed == 0
    with psycopg.connect(chain.app_url, autocommit=True) as conn:
        conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
        with conn.transaction():
            report = audit_chain.verify(AuditRepository(conn, chain.db.queries.audit), max_unsealed_seconds=0,
                                  batch_size=100)
    assert report == audit_chain.Report(seals=events, unsealed=0, problem=None)


def test_an_open_request_transaction_neither_blocks_the_sealer_nor_is_sealed_before_it_commits(chain):
    with psycopg.connect(chain.app_url, autocommit=True) as request_conn:
        with request_conn.transaction():
            AuditRepository(request_conn, chain.db.queries.audit).add_all(
                [AuditEvent("R", "patient.read")], actor=None, client_addr=None, request_id="open-request")
            later = commit_events(chain.db)  # committed, but its xid is above the open one's

            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                sealed = pool.submit(seal, chain.db).result(timeout=5)
            assert time.monotonic() - started < 2 and sealed == 0
        # committed now
        assert seal(chain.db) == 2
    with chain.owner() as conn:
        assert sealed_ids(conn) == event_ids(conn, "open-request") + event_ids(conn, later)
    assert chain.cli("verify", "--max-unsealed-seconds", "0").exit_code == 0


def test_a_sealer_holding_its_lock_does_not_block_requests_and_a_second_sealer_skips(chain):
    commit_events(chain.db, 2)
    with psycopg.connect(chain.app_url, autocommit=True) as sealer_conn:
        with sealer_conn.transaction():
            assert audit_chain.seal(AuditRepository(sealer_conn, chain.db.queries.audit)) == 2
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                request = pool.submit(commit_events, chain.db, 1)
                second_sealer = pool.submit(seal, chain.db)
                assert request.result(timeout=3)
                assert second_sealer.result(timeout=3) is None
    assert seal(chain.db) == 1


def test_a_list_pages_patients_are_sealed_and_an_event_sealed_without_them_hashes_as_before():
    event = {name: None for name in EVENT_COLUMNS} | {
        "id": 7, "xid": 812, "action": "R", "event_type": "patient.read", "outcome": "success",
        "occurred_at": dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc), "fields": []}
    listed = ["5d49553a-d039-4ab9-ad73-e4e7cbd8223a", "6502fadb-7983-49a9-ad91-d4038f80c36b"]
    assert audit_chain.canonical(event | {"patient_ids": None}) == audit_chain.canonical(event)
    assert b'"patient_ids":["5d49553a' in audit_chain.canonical(event | {"patient_ids": listed})
    assert audit_chain.canonical(event | {"patient_ids": listed[:1]}) != audit_chain.canonical(event | {"patient_ids": listed})


def test_verify_reports_a_patient_removed_from_a_sealed_list_event(chain):
    listed = [uuid.uuid4(), uuid.uuid4()]
    chain.db.run(lambda uow: uow.audit(AuditEvent("R", "patient.list", "patient", patient_ids=tuple(listed))))
    assert seal_all(chain.db) == 1
    result = chain.cli("verify")
    assert result.exit_code == 0, result.output
    with chain.owner() as conn:
        tamper(conn, "UPDATE audit_events SET patient_ids = ARRAY[%s::uuid]", (listed[0],))
    result = chain.cli("verify")
    assert result.exit_code == 1 and result.output.startswith("FAIL altered: event ")


def test_verify_reports_ok_on_an_untouched_chain(trail):
    result = trail.app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: 12 seal(s) verified; 0 event(s) awaiting sealing")


def test_verify_reports_an_altered_event_by_id(chain, sealed):
    with chain.owner() as conn:
        tamper(conn, "UPDATE audit_events SET outcome = 'failure' WHERE id = %s", (sealed[5],))
    result = chain.cli("verify")
    assert result.exit_code == 1
    assert result.output.startswith(f"FAIL altered: event {sealed[5]} (seal 6) was altered")


def test_verify_reports_a_deleted_event_by_id(trail, attacker):
    tamper(attacker, "DELETE FROM audit_events WHERE id = %s", (trail.ids[3],))
    assert verify_in(attacker) == audit_chain.Problem("deleted", f"event {trail.ids[3]} (seal 4) was deleted")


@pytest.mark.parametrize("statement, expected", [
    ("DELETE FROM audit_seals WHERE seq = 7", "seal 7 is missing (the next seal is 8)"),
    ("UPDATE audit_seals SET prev_hash = sha256(prev_hash) WHERE seq = 7", "seal 7 does not link to seal 6"),
], ids=["seq-gap", "wrong-prev-hash"])
def test_verify_reports_a_broken_link(attacker, statement, expected):
    tamper(attacker, statement)
    assert verify_in(attacker) == audit_chain.Problem("broken_link", expected)


def test_a_forged_and_rehashed_chain_is_found_only_against_an_exported_head(chain, sealed, tmp_path):
    head = chain.cli("head").output
    (tmp_path / "head.json").write_text(head)
    with chain.owner() as conn, conn.transaction():
        seq = conn.execute("SELECT seq FROM audit_seals WHERE event_id = %s", (sealed[4],)).fetchone()[0]
        tamper(conn, "UPDATE audit_events SET outcome = 'failure' WHERE id = %s", (sealed[4],))
        tamper(conn, "DELETE FROM audit_seals WHERE seq >= %s", (seq,))
        assert audit_chain.seal(AuditRepository(conn, AUDIT_SQL)) == 12 - seq + 1  # rehash

    assert chain.cli("verify").exit_code == 0
    for head_option in (head, str(tmp_path / "head.json")):
        result = chain.cli("verify", "--head", head_option)
        assert result.exit_code == 1
        assert result.output.startswith("FAIL head_mismatch: seal 12 differs from the exported head")


def test_a_truncated_tail_is_found_only_against_an_exported_head(trail, attacker):
    head = audit_chain.parse_head(audit_chain.export_head(AuditRepository(attacker, AUDIT_SQL)))
    tamper(attacker, "DELETE FROM audit_seals WHERE seq > 9")
    tamper(attacker, "DELETE FROM audit_events WHERE id = ANY(%s)", (trail.ids[9:],))

    assert verify_in(attacker) is None
    assert verify_in(attacker, head=head) == audit_chain.Problem(
        "head_mismatch", "the chain ends at seq 9, before the exported head's seq 12: seals were removed")


@pytest.mark.parametrize("xid", ["3", "99999999999"], ids=["behind-the-sealer", "never-assigned"])
def test_verify_reports_an_event_inserted_out_of_order(trail, xid):
    with psycopg.connect(trail.app_url, autocommit=True) as conn:  # the app role may set xid
        with conn.transaction(force_rollback=True):
            forged = conn.execute(
                "INSERT INTO audit_events (xid, action, event_type, outcome) "
                "VALUES (%s::xid8, 'R', 'patient.read', 'success') RETURNING id", (xid,)).fetchone()[0]
            assert audit_chain.seal(AuditRepository(conn, AUDIT_SQL)) == 0, "the sealer never goes back, nor past the horizon"
            problem = verify_in(conn)
    assert problem.kind == "out_of_order"
    assert problem.message.startswith(f"event {forged} was inserted out of order")


def test_verify_reports_an_event_left_unsealed_too_long(chain, sealed):
    request_id = commit_events(chain.db)
    with chain.owner() as conn:
        late = event_ids(conn, request_id)[0]

    assert chain.cli("verify").exit_code == 0
    result = chain.cli("verify", "--max-unsealed-seconds", "0")
    assert result.exit_code == 1
    assert result.output.startswith(f"FAIL unsealed: event {late} has been unsealed for more than 0 s")


def test_seal_prints_how_many_it_sealed_and_head_prints_the_chain_head(chain):
    assert json.loads(chain.cli("head").output) == {
        "seq": 0, "hash": "00" * 32, "event_id": None, "sealed_at": None}
    request_id = commit_events(chain.db, 5)

    first, second = chain.cli("seal"), chain.cli("seal")

    assert (first.exit_code, first.output) == (0, "sealed 5 audit event(s)\n")
    assert second.output == "sealed 0 audit event(s)\n"
    head = json.loads(chain.cli("head").output)
    with chain.owner() as conn:
        last_id = event_ids(conn, request_id)[-1]
        last_hash = conn.execute("SELECT hash FROM audit_seals WHERE seq = 5").fetchone()[0]
    assert (head["seq"], head["event_id"], head["hash"]) == (5, last_id, last_hash.hex())
    assert dt.datetime.fromisoformat(head["sealed_at"]).tzinfo is not None
    assert chain.cli("verify", "--head", json.dumps(head)).exit_code == 0


@pytest.mark.parametrize("head", ['{"seq": 1}', '{"seq": 1, "hash": "abcd"}', "no-such-file.json"])
def test_verify_refuses_a_head_that_is_not_one(session_app, head):
    result = session_app.test_cli_runner().invoke(args=["audit", "verify", "--head", head])
    assert result.exit_code == 2 and "--head takes a file or the JSON printed by `audit head`" in result.output


def test_the_sealer_refuses_to_continue_a_chain_whose_head_event_is_gone(trail, attacker):
    tamper(attacker, "DELETE FROM audit_events WHERE id = %s", (trail.ids[-1],))
    with pytest.raises(audit_chain.ChainBroken, match="the event of seal 12 is missing"):
        audit_chain.seal(AuditRepository(attacker, AUDIT_SQL))


def test_the_background_sealer_seals_on_its_own_and_stops_cleanly(chain):
    sealer = audit_chain.start_background_sealer(chain.app, 0.02)
    try:
        request_id = commit_events(chain.db, 3)
        with chain.owner() as conn:
            deadline = time.monotonic() + 5
            while len(sealed_ids(conn)) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sealed_ids(conn) == event_ids(conn, request_id)
    finally:
        sealer.stop()
    assert not sealer._thread.is_alive()
    assert audit_chain.start_background_sealer(chain.app, 0) is None


def test_the_background_sealer_logs_errors_by_type_only_and_retries(caplog):
    class FailingOnce:
        calls = 0

        def run(self, work):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("patient 123-45-6789")
            return 4

    database = FailingOnce()
    sealer = audit_chain.BackgroundSealer(database, 0.01)
    with caplog.at_level(logging.WARNING, logger="clarity.audit_chain"):
        sealer.start()
        deadline = time.monotonic() + 5
        while database.calls < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        sealer.stop()
    assert database.calls >= 2
    assert "audit sealing failed (RuntimeError)" in caplog.text and "6789" not in caplog.text


def test_gunicorn_workers_start_the_sealer_after_fork_and_stop_it_on_exit(server, fresh_database, keyring):
    app = create_app(make_settings(server, fresh_database, audit_seal_interval_seconds=0.02), keyring=keyring)
    hooks = runpy.run_path(str(GUNICORN_CONF))
    worker = types.SimpleNamespace(wsgi=app, notify=lambda: None)

    hooks["post_worker_init"](worker)
    try:
        commit_events(app.extensions["clarity"].db)
        with psycopg.connect(server.url(fresh_database), autocommit=True) as conn:
            deadline = time.monotonic() + 5
            while not sealed_ids(conn) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(sealed_ids(conn)) == 1
    finally:
        hooks["worker_exit"](None, worker)
        heartbeat.install(None)
    assert not worker.audit_sealer._thread.is_alive()
    assert app.extensions["clarity"].db._pool is None


def test_the_seal_interval_comes_from_the_environment():
    assert config.from_env({}).audit_seal_interval_seconds == 5
    assert config.from_env({"CLARITY_AUDIT_SEAL_INTERVAL_SECONDS": "0"}).audit_seal_interval_seconds == 0
    with pytest.raises(config.ConfigError):
        config.from_env({"CLARITY_AUDIT_SEAL_INTERVAL_SECONDS": "-1"})
