"""What clarity.metrics counts, in this process (prometheus_client's in-memory storage): labels
from fixed vocabularies only, driver errors counted once, the pool gauges, the audit backlog,
the bind address and the multiprocess directory. tests/e2e/test_metrics_endpoint.py serves them."""
from __future__ import annotations

import datetime as dt
import os
import stat
import sys
import time
from types import SimpleNamespace

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import errors as pg
from psycopg_pool import PoolTimeout

from clarity import errors, metrics


def value(name, text=None, **labels) -> float:
    """The sample ``name`` with ``labels`` in ``text`` (default: this process's metrics); 0 when absent."""
    for family in text_string_to_metric_families((text or metrics.render()).decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_a_request_is_counted_by_route_template_method_and_status_with_its_latency():
    route = "/api/v1/patients/<uuid:patient_id>"
    before = value("clarity_http_requests_total", route=route, method="GET", status="200")
    seen = value("clarity_http_request_duration_seconds_count", route=route, method="GET")

    metrics.observe_request(route, "GET", 200, 0.004)

    assert value("clarity_http_requests_total", route=route, method="GET", status="200") == before + 1
    assert value("clarity_http_request_duration_seconds_count", route=route, method="GET") == seen + 1
    assert value("clarity_http_request_duration_seconds_bucket", route=route, method="GET", le="0.005") >= 1


def test_unknown_methods_share_one_label_so_clients_cannot_invent_series():
    before = value("clarity_http_requests_total", route=metrics.UNMATCHED, method="other", status="405")

    metrics.observe_request(metrics.UNMATCHED, "BREW", 405, 0.001)
    metrics.observe_request(metrics.UNMATCHED, "X-" + "A" * 100, 405, None)

    assert value("clarity_http_requests_total", route=metrics.UNMATCHED, method="other", status="405") == before + 2
    assert "BREW" not in metrics.render().decode()


def test_a_driver_error_counts_once_by_sqlstate_class_however_often_it_is_translated():
    before = value("clarity_db_errors_total", sqlstate_class="23")
    exc = pg.UniqueViolation("Key (email)=(grace@clarity.test) already exists.")

    errors.translate(exc)
    errors.translate(exc)  # a unit of work and Database.run both translate the same error

    assert value("clarity_db_errors_total", sqlstate_class="23") == before + 1
    assert "grace@clarity.test" not in metrics.render().decode()


def test_an_error_without_sqlstate_counts_as_none_and_a_pool_timeout_as_no_database_error():
    before = value("clarity_db_errors_total", sqlstate_class="none")

    errors.translate(psycopg.OperationalError("connection refused"))
    errors.translate(PoolTimeout("no connection in 3 s"))

    assert value("clarity_db_errors_total", sqlstate_class="none") == before + 1


class FakeDatabase:
    def __init__(self, stats):
        self.stats = stats

    def pool_stats(self):
        return self.stats


def test_the_pool_gauges_copy_the_pools_statistics_and_timeouts_add_up():
    timeouts = value("clarity_db_pool_timeouts_total")
    db = FakeDatabase({"pool_size": 3, "pool_available": 2, "requests_waiting": 1, "pool_max": 8,
                       "requests_timeouts": 2})

    metrics.sample_pool(db)
    metrics.sample_pool(FakeDatabase({}))  # a closed pool changes nothing

    text = metrics.render()
    assert [value(name, text) for name in ("clarity_db_pool_connections", "clarity_db_pool_idle_connections",
                                           "clarity_db_pool_waiting_requests", "clarity_db_pool_max_connections")] \
        == [3, 2, 1, 8]
    assert value("clarity_db_pool_timeouts_total", text) == timeouts + 2


def test_the_pool_sampler_samples_until_stopped():
    db = FakeDatabase({"pool_size": 5, "pool_available": 5, "requests_waiting": 0, "pool_max": 8})

    sampler = metrics.PoolSampler(db, interval_seconds=0.01).start()
    try:
        deadline = time.monotonic() + 2
        while value("clarity_db_pool_connections") != 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sampler.stop()

    assert value("clarity_db_pool_connections") == 5
    assert not sampler._thread.is_alive()


def test_sign_ins_audit_events_and_rate_limit_refusals_are_counted_by_outcome_and_scope():
    failures = value("clarity_sign_ins_total", outcome="failure")
    written = value("clarity_audit_events_written_total")
    limited = value("clarity_rate_limited_total", scope="address")

    metrics.count_sign_in("failure")
    metrics.count_audit_events(3)
    metrics.count_rate_limited("address")

    text = metrics.render()
    assert value("clarity_sign_ins_total", text, outcome="failure") == failures + 1
    assert value("clarity_audit_events_written_total", text) == written + 3
    assert value("clarity_rate_limited_total", text, scope="address") == limited + 1


def test_counting_that_fails_never_fails_its_caller_and_is_logged_once(monkeypatch, caplog):
    def full_disk():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics, "_get", full_disk)
    monkeypatch.setattr(metrics, "_failed", False)

    metrics.count_audit_events(1)  # after the audit insert: raising would fail the unit of work
    metrics.observe_request("/health/live", "GET", 200, 0.001)

    assert [r.getMessage() for r in caplog.records if r.name == "clarity.metrics"] == [
        "metrics cannot be counted (OSError); they may be incomplete"]


class FakeAuditRepository:
    def __init__(self, head, unsealed=7):
        self.head, self.unsealed, self.asked = head, unsealed, []

    def last_seal(self):
        return self.head

    def count_unsealed(self, after):
        self.asked.append(after)
        return self.unsealed


def seal(sealed_seconds_ago=30, event_xid=900):
    return SimpleNamespace(event_xid=event_xid, event_id=42,
                           sealed_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=sealed_seconds_ago))


def test_the_backlog_counts_events_after_the_last_seal_and_its_age():
    repo = FakeAuditRepository(seal(30))

    unsealed, age = metrics.audit_backlog(repo)

    assert unsealed == 7 and repo.asked == [(900, 42)]
    assert 29 < age < 60


def test_before_the_first_seal_every_event_is_unsealed_and_there_is_no_age():
    repo = FakeAuditRepository(None)

    assert metrics.audit_backlog(repo) == (7, None)
    assert repo.asked == [(0, 0)]


def test_a_seal_whose_event_is_gone_gives_no_backlog():
    assert metrics.audit_backlog(FakeAuditRepository(seal(event_xid=None)))[0] is None


def test_an_unreachable_database_reads_as_down_without_failing_the_scrape_and_is_asked_once_a_second():
    attempts = []

    def connect():
        attempts.append(1)
        raise psycopg.OperationalError("connection refused")

    collector = metrics.AuditCollector(connect, audit_queries=None, min_interval=60)
    first = {family.name: family for family in collector.collect()}
    list(collector.collect())

    assert [sample.value for sample in first["clarity_audit_metrics_up"].samples] == [0]
    assert set(first) == {"clarity_audit_metrics_up"}
    assert len(attempts) == 1


@pytest.mark.parametrize("text, address", [
    (None, ("127.0.0.1", 9464)), ("", ("127.0.0.1", 9464)), ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:9464", ("::1", 9464)), ("off", None),
])
def test_the_metrics_bind_is_host_and_port_or_off(text, address):
    assert metrics.parse_bind(text) == address


@pytest.mark.parametrize("text", ["9464", "localhost", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000",
                                  "unix:/run/metrics.sock"])
def test_a_bind_that_is_not_host_and_port_is_refused(text):
    with pytest.raises(ValueError, match="CLARITY_METRICS_BIND"):
        metrics.parse_bind(text)


@pytest.fixture
def multiprocess_unset(monkeypatch):
    """As in gunicorn's master before its workers start: prometheus_client not imported yet."""
    monkeypatch.delitem(sys.modules, "prometheus_client.values", raising=False)


def test_without_a_directory_each_server_gets_a_private_new_one(multiprocess_unset):
    environ = {}

    path, made = metrics.prepare_directory(environ)
    other, _ = metrics.prepare_directory({})
    os.rmdir(other)
    try:
        assert made and environ["PROMETHEUS_MULTIPROC_DIR"] == path != other
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700 and os.listdir(path) == []
    finally:
        os.rmdir(path)


def test_the_operators_directory_is_emptied_of_a_previous_runs_metric_files(multiprocess_unset, tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_4242.db").write_bytes(b"stale")
    (directory / "README").write_text("kept")

    path, made = metrics.prepare_directory({"PROMETHEUS_MULTIPROC_DIR": str(directory)})

    assert (path, made) == (str(directory), False)
    assert sorted(os.listdir(directory)) == ["README"]


def test_the_directory_is_refused_once_prometheus_client_keeps_its_metrics_in_memory():
    metrics.render()  # imports prometheus_client, without PROMETHEUS_MULTIPROC_DIR

    with pytest.raises(RuntimeError, match="imported before PROMETHEUS_MULTIPROC_DIR"):
        metrics.prepare_directory({})


def test_in_process_requests_are_counted_by_route_template_and_the_api_serves_no_metrics(client):
    before = value("clarity_http_requests_total", route=metrics.UNMATCHED, method="GET", status="404")
    live = value("clarity_http_requests_total", route="/health/live", method="GET", status="200")

    assert client.get("/metrics").status_code == 404
    client.get("/health/live")

    assert value("clarity_http_requests_total", route=metrics.UNMATCHED, method="GET", status="404") == before + 1
    assert value("clarity_http_requests_total", route="/health/live", method="GET", status="200") == live + 1


def test_in_process_the_audit_backlog_is_read_through_the_apps_database(db):
    text = metrics.render(db)

    assert value("clarity_audit_metrics_up", text) == 1
    assert "clarity_audit_unsealed_events " in text.decode()
