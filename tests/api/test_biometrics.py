"""Biometric readings over the API: ingest (single, batch, all-or-nothing, idempotent retries),
pages, summaries, the latest per kind, scoping and audit."""
from __future__ import annotations

import datetime as dt

import pytest

from clarity.services.biometrics import KINDS

URL = "/api/v1/patients/{}/biometrics"
# Two days ago at 10:00 UTC: in the past, inside the current or the previous month's partition.
BASE = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)


def reading(kind="heart_rate", value=72, at=None, device="watch-1", **overrides) -> dict:
    body = {"kind": kind, "value": value, "unit": KINDS[kind].unit,
            "recorded_at": (at or BASE).isoformat(), "source_device": device}
    body.update(overrides)
    return body


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def post(client, staff, patient_id, body):
    return client.post(URL.format(patient_id), json=body, headers=staff.headers)


def get(client, staff, patient_id, suffix="", query=""):
    return client.get(URL.format(patient_id) + suffix + (f"?{query}" if query else ""), headers=staff.headers)


@pytest.fixture
def patient(provider, create_patient):
    return create_patient(provider)["id"]


def test_a_single_reading_is_stored_and_read_back(client, provider, patient):
    response = post(client, provider, patient, reading(value=71.5))
    assert response.status_code == 201
    assert response.get_json() == {"received": 1, "stored": 1, "duplicates": 0, "alerts_raised": 0}
    listed = get(client, provider, patient)
    assert listed.status_code == 200
    [got] = listed.get_json()
    assert instant(got.pop("recorded_at")) == BASE
    assert got == {"kind": "heart_rate", "value": 71.5, "unit": "bpm", "source_device": "watch-1"}
    assert listed.headers["Cache-Control"] == "no-store"


def test_a_batch_is_stored_and_listed_newest_first(client, provider, patient):
    batch = [reading(at=BASE + dt.timedelta(minutes=m), value=60 + m) for m in (0, 20, 10)]
    response = post(client, provider, patient, batch)
    assert response.status_code == 201
    assert response.get_json() == {"received": 3, "stored": 3, "duplicates": 0, "alerts_raised": 0}
    assert [r["value"] for r in get(client, provider, patient).get_json()] == [80, 70, 60]


@pytest.mark.parametrize("bad, field", [
    ({"value": 987654.5}, "value"),
    ({"value": True}, "value"),
    ({"value": "72.5"}, "value"),
    ({"unit": "mmHg"}, "unit"),
    ({"kind": "mood"}, "kind"),
    ({"recorded_at": (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=30)).isoformat()}, "recorded_at"),
    ({"recorded_at": (BASE - dt.timedelta(days=800)).isoformat()}, "recorded_at"),
    ({"recorded_at": BASE.replace(tzinfo=None).isoformat()}, "recorded_at"),
    ({"recorded_at": "yesterday"}, "recorded_at"),
    ({"source_device": ""}, "source_device"),
    ({"source_device": "watch\x00"}, "source_device"),
    ({"colour": "red"}, "colour"),
])
def test_a_batch_with_one_bad_reading_stores_nothing_and_names_its_index_and_field(client, provider, patient, bad, field):
    batch = [reading(at=BASE + dt.timedelta(minutes=m)) for m in range(3)]
    batch[1].update(bad)
    response = post(client, provider, patient, batch)
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["field"] == f"[1].{field}"
    assert "Reading 1" in problem["detail"]
    for value in bad.values():
        assert not str(value) or str(value) not in response.get_data(as_text=True)
    assert get(client, provider, patient).get_json() == []


def test_a_bad_single_reading_names_its_field_and_a_missing_one_is_required(client, provider, patient):
    response = post(client, provider, patient, reading(value=0))
    assert response.status_code == 422 and response.get_json()["field"] == "value"
    incomplete = reading()
    del incomplete["unit"]
    response = post(client, provider, patient, incomplete)
    assert response.status_code == 422 and response.get_json()["field"] == "unit"


def test_empty_batches_and_batches_over_10000_readings_are_refused(client, provider, patient):
    assert post(client, provider, patient, []).status_code == 422
    too_many = [reading(at=BASE - dt.timedelta(seconds=i)) for i in range(10_001)]
    response = post(client, provider, patient, too_many)
    assert response.status_code == 422 and "10000" in response.get_json()["detail"]
    assert post(client, provider, patient, "72").status_code == 422


def test_a_retried_batch_stores_nothing_twice(client, provider, patient):
    batch = [reading(at=BASE + dt.timedelta(minutes=m)) for m in range(3)]
    assert post(client, provider, patient, batch).get_json()["stored"] == 3
    again = post(client, provider, patient, batch + [reading(at=BASE + dt.timedelta(minutes=3))])
    assert again.status_code == 201
    assert again.get_json() == {"received": 4, "stored": 1, "duplicates": 3, "alerts_raised": 0}
    assert len(get(client, provider, patient).get_json()) == 4


def test_a_reading_repeated_within_a_batch_is_stored_once_but_another_device_is_another_reading(client, provider, patient):
    batch = [reading(), reading(value=73), reading(device="cuff-2")]
    assert post(client, provider, patient, batch).get_json() == {
        "received": 3, "stored": 2, "duplicates": 1, "alerts_raised": 0}
    listed = get(client, provider, patient).get_json()
    assert sorted((r["source_device"], r["value"]) for r in listed) == [("cuff-2", 72), ("watch-1", 72)]


def test_the_list_filters_by_kind_and_time_range_and_pages_with_a_link(client, provider, patient):
    batch = [reading(at=BASE + dt.timedelta(minutes=m)) for m in range(5)]
    batch += [reading("spo2", 97, at=BASE + dt.timedelta(minutes=m)) for m in range(2)]
    assert post(client, provider, patient, batch).status_code == 201

    def page(query):
        response = get(client, provider, patient, query=query)
        assert response.status_code == 200, response.get_json()
        return response

    assert [r["kind"] for r in page("kind=spo2").get_json()] == ["spo2", "spo2"]
    window = page("kind=heart_rate&from=" + (BASE + dt.timedelta(minutes=1)).isoformat().replace("+", "%2B")
                  + "&to=" + (BASE + dt.timedelta(minutes=3)).isoformat().replace("+", "%2B")).get_json()
    assert [instant(r["recorded_at"]) for r in window] == [BASE + dt.timedelta(minutes=m) for m in (2, 1)]

    seen, query = [], "limit=3"
    while True:
        response = page(query)
        seen += [(r["recorded_at"], r["kind"]) for r in response.get_json()]
        link = response.headers.get("Link")
        if not link:
            break
        query = link[link.index("?") + 1:link.index(">")]
    assert len(seen) == 7 and len(set(seen)) == 7
    assert seen == sorted(seen, reverse=True)


def test_pages_over_every_kind_meet_exactly_where_kinds_and_devices_share_an_instant(client, provider, patient):
    """The list probes each kind separately (sql/biometrics.sql): its pages must still follow
    (recorded_at, kind, source_device) newest first, with no reading lost or repeated at a page
    boundary that falls between two kinds or two devices of one instant."""
    kinds = ("heart_rate", "spo2", "temperature")
    batch = [reading(kind, KINDS[kind].min_value + m, at=BASE + dt.timedelta(minutes=m), device=device)
             for m in range(4) for kind in kinds for device in ("cuff-2", "watch-1")]
    assert post(client, provider, patient, batch).status_code == 201
    expected = sorted(((instant(r["recorded_at"]), r["kind"], r["source_device"]) for r in batch), reverse=True)

    for limit, kind in ((5, None), (7, None), (1, None), (3, "spo2")):
        seen, query = [], f"limit={limit}" + (f"&kind={kind}" if kind else "")
        while True:
            response = get(client, provider, patient, query=query)
            assert response.status_code == 200, response.get_json()
            page = response.get_json()
            assert 0 < len(page) <= limit
            seen += [(instant(r["recorded_at"]), r["kind"], r["source_device"]) for r in page]
            link = response.headers.get("Link")
            if not link:
                break
            query = link[link.index("?") + 1:link.index(">")]
        assert seen == [e for e in expected if kind in (None, e[1])], (limit, kind)


def test_a_malformed_cursor_is_400_and_an_unknown_filter_422(client, provider, patient):
    assert get(client, provider, patient, query="cursor=bm90LWEtY3Vyc29y").status_code == 400
    assert get(client, provider, patient, query="kinds=spo2").status_code == 422


def test_the_summary_gives_count_min_max_and_average_per_hour_and_per_day(client, provider, patient):
    values = {0: 60, 20: 80, 50: 100, 70: 70}  # minutes after 10:00 -> heart rate
    batch = [reading(at=BASE + dt.timedelta(minutes=m), value=v) for m, v in values.items()]
    batch.append(reading("spo2", 95, at=BASE))
    assert post(client, provider, patient, batch).status_code == 201
    day = "%Y-%m-%dT00:00:00Z"
    span = f"from={BASE:{day}}&to={BASE + dt.timedelta(days=1):{day}}"

    hourly = get(client, provider, patient, "/summary", f"kind=heart_rate&bucket=hour&{span}")
    assert hourly.status_code == 200
    assert [(instant(b["bucket_start"]), b["count"], b["min"], b["max"], b["avg"])
            for b in hourly.get_json()["buckets"]] == [
        (BASE, 3, 60, 100, 80),
        (BASE + dt.timedelta(hours=1), 1, 70, 70, 70),
    ]
    daily = get(client, provider, patient, "/summary", span).get_json()
    assert daily["bucket"] == "day"
    assert [(b["kind"], b["unit"], instant(b["bucket_start"]), b["count"], b["min"], b["max"], b["avg"])
            for b in daily["buckets"]] == [
        ("heart_rate", "bpm", BASE.replace(hour=0), 4, 60, 100, 77.5),
        ("spo2", "%", BASE.replace(hour=0), 1, 95, 95, 95),
    ]


def test_a_summary_refuses_an_inverted_or_too_long_range(client, provider, patient):
    inverted = get(client, provider, patient, "/summary", "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z")
    assert inverted.status_code == 422 and inverted.get_json()["field"] == "from"
    too_long = get(client, provider, patient, "/summary",
                   "bucket=hour&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z")
    assert too_long.status_code == 422


def test_latest_gives_the_newest_reading_of_each_kind(client, provider, patient):
    batch = [reading(at=BASE + dt.timedelta(minutes=m), value=60 + m) for m in range(3)]
    batch += [reading("spo2", 98, at=BASE - dt.timedelta(days=1)), reading("spo2", 96, at=BASE - dt.timedelta(days=3))]
    assert post(client, provider, patient, batch).status_code == 201
    latest = get(client, provider, patient, "/latest")
    assert latest.status_code == 200
    assert [(r["kind"], r["value"]) for r in latest.get_json()] == [("heart_rate", 62), ("spo2", 98)]


def test_a_provider_gets_404_for_another_providers_patients_readings(client, make_staff, create_patient):
    mine, theirs = make_staff("provider"), make_staff("provider")
    patient = create_patient(theirs)["id"]
    assert post(client, theirs, patient, reading()).status_code == 201
    assert post(client, mine, patient, reading(value=80)).status_code == 404
    for suffix in ("", "/summary", "/latest"):
        assert get(client, mine, patient, suffix).status_code == 404, suffix
    assert [r["value"] for r in get(client, theirs, patient).get_json()] == [72]


def test_an_admin_reads_any_patients_readings(client, admin, provider, patient):
    assert post(client, provider, patient, reading()).status_code == 201
    assert len(get(client, admin, patient).get_json()) == 1


def test_an_auditor_gets_403_and_the_denials_are_audited(client, conn, make_staff, provider, patient):
    auditor = make_staff("auditor")
    assert post(client, auditor, patient, reading()).status_code == 403
    for suffix in ("", "/summary", "/latest"):
        assert get(client, auditor, patient, suffix).status_code == 403
    denied = conn.execute("SELECT event_type FROM audit_events WHERE actor_id = %s AND outcome = 'denied' "
                          "AND patient_id = %s ORDER BY id", (auditor.id, patient)).fetchall()
    assert [row[0] for row in denied] == ["access.denied"] * 4


def test_every_ingest_and_read_is_audited_once_with_the_kinds_touched(client, conn, provider, patient):
    batch = [reading(), reading("spo2", 97), reading("temperature", 36.8)]
    assert post(client, provider, patient, batch).status_code == 201
    assert get(client, provider, patient, query="kind=spo2").status_code == 200
    assert get(client, provider, patient, "/summary", f"kind=temperature&from={BASE:%Y-%m-%dT00:00:00Z}").status_code == 200
    assert get(client, provider, patient, "/latest").status_code == 200
    events = conn.execute("SELECT action, event_type, fields, outcome FROM audit_events WHERE patient_id = %s "
                          "AND event_type LIKE 'biometrics.%%' ORDER BY id", (patient,)).fetchall()
    assert events == [
        ("C", "biometrics.ingest", ["heart_rate", "spo2", "temperature"], "success"),
        ("R", "biometrics.read", ["spo2"], "success"),
        ("R", "biometrics.summary", ["temperature"], "success"),
        ("R", "biometrics.latest", ["heart_rate", "spo2", "temperature"], "success"),
    ]


def test_reads_under_an_emergency_grant_are_allowed_and_audited_as_emergency_reads(client, conn, make_staff, create_patient):
    owner, covering = make_staff("provider"), make_staff("provider")
    patient = create_patient(owner)["id"]
    assert post(client, owner, patient, reading()).status_code == 201
    assert get(client, covering, patient).status_code == 404
    granted = client.post(f"/api/v1/patients/{patient}/emergency-access",
                          json={"reason": "Covering the night shift on the ward"}, headers=covering.headers)
    assert granted.status_code == 201
    assert [r["value"] for r in get(client, covering, patient).get_json()] == [72]
    events = conn.execute("SELECT event_type FROM audit_events WHERE actor_id = %s AND patient_id = %s "
                          "AND event_type LIKE 'biometrics.%%' ORDER BY id", (covering.id, patient)).fetchall()
    assert [e[0] for e in events] == ["biometrics.read", "biometrics.emergency_read"]
