"""Appointments over the API: booking, a patient's list, the actor's schedule, rescheduling and
cancelling with If-Match, no double-booking (the exclusion constraint, also for raw SQL as the
app role), row-level security, scoping and audit."""
import datetime as dt
import uuid

import psycopg
import pytest

from clarity.security.access import Actor
from tests.conftest import statements_run

URL = "/api/v1/appointments"
EXCLUSION = "appointments_provider_id_starts_at_excl"
# Far enough ahead that "not in the past" never bites; whole hours keep the arithmetic legible.
BASE = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


def at(hours: float) -> str:
    """BASE + hours, as an RFC 3339 timestamp with an offset."""
    return (BASE + dt.timedelta(hours=hours)).isoformat()


def q(value: str) -> str:
    """A timestamp for a query string ('+' would decode to a space)."""
    return value.replace("+", "%2B")


def book(client, staff, for_patient, start=0, end=1, **extra):
    """POST a booking for the patient id ``for_patient`` over BASE+start .. BASE+end hours."""
    body = {"starts_at": at(start), "ends_at": at(end), **extra}
    return client.post(f"/api/v1/patients/{for_patient}/appointments", json=body, headers=staff.headers)


def booked(client, staff, for_patient, start=0, end=1, **extra) -> dict:
    response = book(client, staff, for_patient, start, end, **extra)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def patch(client, staff, appointment, body, version=None):
    version = appointment["version"] if version is None else version
    return client.patch(f"{URL}/{appointment['id']}", json=body, headers={**staff.headers, "If-Match": f'"{version}"'})


def ids(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [a["id"] for a in response.get_json()]


def schedule(client, staff, query=""):
    return client.get(f"{URL}?{query}", headers=staff.headers)


def follow_pages(client, staff, url) -> list[str]:
    seen = []
    while url:
        response = client.get(url, headers=staff.headers)
        seen += ids(response)
        assert len(response.get_json()) <= 2
        link = response.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    return seen


def act_as(conn, actor_id, role):
    conn.execute("SELECT set_config('clarity.actor_id', %s, true), set_config('clarity.actor_role', %s, true)",
                 (str(actor_id) if actor_id else "", role or ""))


@pytest.fixture
def patient(provider, create_patient):
    return create_patient(provider)


# --- booking ------------------------------------------------------------------------------

def test_booking_returns_201_with_location_etag_and_the_appointment(client, provider, patient):
    response = book(client, provider, patient["id"], 0, 0.5)
    assert response.status_code == 201
    created = response.get_json()
    assert response.headers["Location"] == f"{URL}/{created['id']}"
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Cache-Control"] == "no-store"
    assert created["patient_id"] == patient["id"]
    assert created["provider_id"] == created["created_by"] == str(provider.id)
    assert (created["status"], created["cancelled_at"], created["version"]) == ("scheduled", None, 1)
    assert dt.datetime.fromisoformat(created["starts_at"]) == BASE
    assert dt.datetime.fromisoformat(created["ends_at"]) == BASE + dt.timedelta(minutes=30)
    fetched = client.get(response.headers["Location"], headers=provider.headers)
    assert fetched.status_code == 200 and fetched.get_json() == created and fetched.headers["ETag"] == '"1"'


def test_times_in_any_offset_are_the_same_instant(client, provider, patient):
    paris = dt.timezone(dt.timedelta(hours=2))
    body = {"starts_at": BASE.astimezone(paris).isoformat(), "ends_at": at(1)}
    created = client.post(f"/api/v1/patients/{patient['id']}/appointments", json=body, headers=provider.headers)
    assert created.status_code == 201
    assert created.get_json()["starts_at"] == BASE.isoformat()
    assert book(client, provider, patient["id"], 0.5, 1.5).status_code == 409


def test_a_provider_books_only_themself(client, make_staff, provider, patient):
    other = make_staff("provider")
    assert booked(client, provider, patient["id"], provider_id=str(provider.id))["provider_id"] == str(provider.id)
    refused = book(client, provider, patient["id"], 2, 3, provider_id=str(other.id))
    assert refused.status_code == 422 and refused.get_json()["field"] == "provider_id"


def test_an_admin_books_the_patients_provider_by_default_or_any_active_provider(client, admin, make_staff, provider, patient):
    assert booked(client, admin, patient["id"])["provider_id"] == str(provider.id)
    colleague = make_staff("provider")
    assert booked(client, admin, patient["id"], 0, 1, provider_id=str(colleague.id))["provider_id"] == str(colleague.id)
    for not_a_provider in (admin.id, make_staff("auditor").id, uuid.uuid4()):
        refused = book(client, admin, patient["id"], 2, 3, provider_id=str(not_a_provider))
        assert refused.status_code == 422 and refused.get_json()["field"] == "provider_id"


def test_an_admin_cannot_book_a_disabled_provider(client, admin, conn, patient, provider):
    conn.execute("UPDATE users SET disabled_at = now() WHERE id = %s", (provider.id,))
    refused = book(client, admin, patient["id"])
    assert refused.status_code == 422 and refused.get_json()["field"] == "provider_id"


@pytest.mark.parametrize("starts_at, ends_at", [
    ("2031-03-01T09:00:00", "2031-03-01T10:00:00+00:00"),
    ("2031-03-01T09:00:00Z", "2031-03-01T10:00:00"),
    ("2031-03-01", "2031-03-02"),
    ("next tuesday", "2031-03-01T10:00:00Z"),
])
def test_timestamps_without_an_offset_are_422(client, provider, patient, starts_at, ends_at):
    response = client.post(f"/api/v1/patients/{patient['id']}/appointments",
                           json={"starts_at": starts_at, "ends_at": ends_at}, headers=provider.headers)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize("start, end, field", [
    (1, 1, "ends_at"),            # empty
    (2, 1, "ends_at"),            # ends before it starts
    (0, 8.25, "ends_at"),         # over 8 hours
    (-49, -48, "starts_at"),      # yesterday
])
def test_impossible_or_past_appointments_are_422_naming_the_field(client, provider, patient, start, end, field):
    response = book(client, provider, patient["id"], start, end)
    assert response.status_code == 422
    assert response.get_json()["field"] == field


def test_eight_hours_exactly_and_a_start_within_the_clock_skew_are_accepted(client, provider, patient):
    assert book(client, provider, patient["id"], 0, 8).status_code == 201
    just_now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    body = {"starts_at": just_now.isoformat(), "ends_at": (just_now + dt.timedelta(minutes=20)).isoformat()}
    assert client.post(f"/api/v1/patients/{patient['id']}/appointments", json=body,
                       headers=provider.headers).status_code == 201


def test_booking_refuses_unknown_and_read_only_fields(client, provider, patient):
    for extra in ({"status": "completed"}, {"id": str(uuid.uuid4())}, {"duration_minutes": 30}, {"patient_id": patient["id"]}):
        assert book(client, provider, patient["id"], **extra).status_code == 422, extra


# --- no double-booking --------------------------------------------------------------------

@pytest.mark.parametrize("start, end", [(0, 1), (0.5, 1.5), (-0.5, 0.5), (0.25, 0.75), (-1, 2)])
def test_an_overlapping_booking_of_the_same_provider_is_409_naming_starts_at(client, provider, create_patient, start, end):
    first, second = create_patient(provider), create_patient(provider)
    booked(client, provider, first["id"], 0, 1)
    response = book(client, provider, second["id"], start, end)
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["field"] == "starts_at"


def test_back_to_back_appointments_are_allowed(client, provider, patient):
    booked(client, provider, patient["id"], 1, 2)
    booked(client, provider, patient["id"], 0, 1)
    booked(client, provider, patient["id"], 2, 3)
    assert len(ids(client.get(f"/api/v1/patients/{patient['id']}/appointments", headers=provider.headers))) == 3


def test_two_providers_may_see_patients_at_the_same_time(client, make_staff, create_patient):
    a, b = make_staff("provider"), make_staff("provider")
    booked(client, a, create_patient(a)["id"])
    booked(client, b, create_patient(b)["id"])


def test_a_cancelled_appointment_does_not_block_its_slot(client, provider, patient):
    first = booked(client, provider, patient["id"])
    assert book(client, provider, patient["id"]).status_code == 409
    assert patch(client, provider, first, {"status": "cancelled"}).status_code == 200
    again = book(client, provider, patient["id"])
    assert again.status_code == 201


def test_the_exclusion_constraint_holds_for_raw_inserts_as_the_app_role(conn, admin, provider, patient):
    act_as(conn, admin.id, "admin")
    insert = ("INSERT INTO appointments (patient_id, provider_id, starts_at, ends_at, created_by, status, cancelled_at)"
              " VALUES (%s, %s, %s, %s, %s, %s, %s)")

    def raw(start, end, status="scheduled"):
        conn.execute(insert, (patient["id"], provider.id, BASE + dt.timedelta(hours=start),
                              BASE + dt.timedelta(hours=end), admin.id, status,
                              dt.datetime.now(dt.timezone.utc) if status == "cancelled" else None))

    assert conn.execute("SELECT current_user").fetchone() == ("clarity_web",)
    raw(0, 1)
    with pytest.raises(psycopg.errors.ExclusionViolation) as refused, conn.transaction():
        raw(0.5, 1.5)
    assert refused.value.diag.constraint_name == EXCLUSION
    with pytest.raises(psycopg.errors.ExclusionViolation), conn.transaction():
        raw(0, 1, "completed")
    raw(1, 2)                      # back to back: '[)' ranges
    raw(0, 1, "cancelled")         # a cancelled one blocks nothing and is blocked by nothing
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        raw(3, 12)                 # longer than 8 hours
    with pytest.raises(psycopg.errors.ExclusionViolation), conn.transaction():
        conn.execute("UPDATE appointments SET starts_at = starts_at - interval '30 minutes'"
                     " WHERE provider_id = %s AND starts_at = %s", (provider.id, BASE + dt.timedelta(hours=1)))


# --- listing and the schedule -------------------------------------------------------------

def test_a_patients_appointments_are_listed_by_start_time_with_window_and_status_filters(client, provider, patient):
    late = booked(client, provider, patient["id"], 5, 6)
    early = booked(client, provider, patient["id"], 0, 1)
    middle = booked(client, provider, patient["id"], 2, 4)
    patch(client, provider, late, {"status": "cancelled"})
    url = f"/api/v1/patients/{patient['id']}/appointments"

    assert ids(client.get(url, headers=provider.headers)) == [early["id"], middle["id"], late["id"]]
    assert ids(client.get(f"{url}?status=scheduled", headers=provider.headers)) == [early["id"], middle["id"]]
    assert ids(client.get(f"{url}?status=cancelled", headers=provider.headers)) == [late["id"]]
    # Overlap: an appointment running at `from` counts; one starting at `to` does not.
    assert ids(client.get(f"{url}?from={q(at(3))}", headers=provider.headers)) == [middle["id"], late["id"]]
    assert ids(client.get(f"{url}?to={q(at(2))}", headers=provider.headers)) == [early["id"]]
    assert ids(client.get(f"{url}?from={q(at(1))}&to={q(at(5))}", headers=provider.headers)) == [middle["id"]]
    assert client.get(f"{url}?from={q(at(5))}&to={q(at(1))}", headers=provider.headers).status_code == 422
    assert client.get(f"{url}?from=2031-01-01T00:00:00", headers=provider.headers).status_code == 422
    assert client.get(f"{url}?statu=cancelled", headers=provider.headers).status_code == 422


def test_a_patients_list_pages_with_a_cursor_in_the_link_header(client, provider, patient):
    created = [booked(client, provider, patient["id"], h, h + 1)["id"] for h in (4, 0, 3, 1, 2)]
    seen = follow_pages(client, provider, f"/api/v1/patients/{patient['id']}/appointments?limit=2")
    assert seen == [created[i] for i in (1, 3, 4, 2, 0)]


def test_the_schedule_shows_a_provider_only_their_own_appointments(client, make_staff, create_patient):
    a, b = make_staff("provider"), make_staff("provider")
    mine = booked(client, a, create_patient(a)["id"])
    theirs = booked(client, b, create_patient(b)["id"])
    assert ids(schedule(client, a)) == [mine["id"]]
    assert ids(schedule(client, b)) == [theirs["id"]]
    assert ids(schedule(client, a, f"provider_id={b.id}")) == []


def test_an_admins_schedule_shows_everyones_and_filters_by_provider(client, admin, make_staff, create_patient):
    a, b = make_staff("provider"), make_staff("provider")
    mine = booked(client, a, create_patient(a)["id"], 0, 1)
    theirs = booked(client, b, create_patient(b)["id"], 0, 1)
    window = f"from={q(at(0))}&to={q(at(1))}"
    assert {mine["id"], theirs["id"]} <= set(ids(schedule(client, admin, window)))
    assert ids(schedule(client, admin, f"{window}&provider_id={b.id}")) == [theirs["id"]]


def test_the_schedule_defaults_to_the_next_7_days_and_spans_at_most_31(client, provider, patient):
    soon = booked(client, provider, patient["id"], 0, 1)           # in two days
    later = booked(client, provider, patient["id"], 24 * 8, 24 * 8 + 1)  # in ten days
    assert ids(schedule(client, provider)) == [soon["id"]]
    assert ids(schedule(client, provider, f"from={q(at(48))}")) == [later["id"]]
    assert ids(schedule(client, provider, f"to={q(at(24 * 8 + 1))}")) == [later["id"]]
    assert ids(schedule(client, provider, f"from={q(at(-1))}&to={q(at(24 * 31 - 1))}")) == [soon["id"], later["id"]]
    too_long = schedule(client, provider, f"from={q(at(-1))}&to={q(at(24 * 31))}")
    assert too_long.status_code == 422 and too_long.get_json()["field"] == "to"
    backwards = schedule(client, provider, f"from={q(at(1))}&to={q(at(0))}")
    assert backwards.status_code == 422 and backwards.get_json()["field"] == "to"
    assert schedule(client, provider, "from=2031-01-01T09:00:00").status_code == 422


def test_the_schedule_includes_an_appointment_running_at_from(client, provider, patient):
    running = booked(client, provider, patient["id"], 0, 8)
    assert ids(schedule(client, provider, f"from={q(at(7.5))}&to={q(at(9))}")) == [running["id"]]
    assert ids(schedule(client, provider, f"from={q(at(8))}&to={q(at(9))}")) == []


def test_schedule_pages_keep_the_defaulted_window_in_the_link_header(client, provider, patient):
    created = [booked(client, provider, patient["id"], h, h + 1)["id"] for h in range(5)]
    first = schedule(client, provider, "limit=2")
    link = first.headers["Link"]
    assert "from=" in link and "to=" in link and "cursor=" in link
    assert follow_pages(client, provider, f"{URL}?limit=2") == created


# --- reading, rescheduling, cancelling ----------------------------------------------------

def test_patch_requires_if_match_and_a_stale_etag_is_412(client, provider, patient):
    appointment = booked(client, provider, patient["id"])
    url = f"{URL}/{appointment['id']}"
    assert client.patch(url, json={"status": "cancelled"}, headers=provider.headers).status_code == 428
    assert patch(client, provider, appointment, {"starts_at": at(2), "ends_at": at(3)}).status_code == 200
    stale = patch(client, provider, appointment, {"status": "cancelled"}, version=1)
    assert stale.status_code == 412
    assert client.get(url, headers=provider.headers).get_json()["status"] == "scheduled"


def test_reschedule_moves_the_appointment_frees_the_old_slot_and_bumps_the_etag(client, provider, create_patient):
    patient, other = create_patient(provider), create_patient(provider)
    appointment = booked(client, provider, patient["id"], 0, 1)
    response = patch(client, provider, appointment, {"starts_at": at(3), "ends_at": at(4.5)})
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    moved = response.get_json()
    assert dt.datetime.fromisoformat(moved["starts_at"]) == BASE + dt.timedelta(hours=3)
    assert dt.datetime.fromisoformat(moved["ends_at"]) == BASE + dt.timedelta(hours=4.5)
    booked(client, provider, other["id"], 0, 1)
    longer = patch(client, provider, moved, {"ends_at": at(5)})
    assert longer.status_code == 200 and longer.get_json()["starts_at"] == moved["starts_at"]


def test_rescheduling_into_a_conflict_is_409_and_changes_nothing(client, provider, create_patient):
    busy = booked(client, provider, create_patient(provider)["id"], 2, 3)
    appointment = booked(client, provider, create_patient(provider)["id"], 0, 1)
    response = patch(client, provider, appointment, {"starts_at": at(2.5), "ends_at": at(3.5)})
    assert response.status_code == 409 and response.get_json()["field"] == "starts_at"
    longer = patch(client, provider, appointment, {"ends_at": at(2.5)})
    assert longer.status_code == 409
    unchanged = client.get(f"{URL}/{appointment['id']}", headers=provider.headers)
    assert unchanged.get_json() == appointment and unchanged.headers["ETag"] == '"1"'
    assert client.get(f"{URL}/{busy['id']}", headers=provider.headers).get_json() == busy


@pytest.mark.parametrize("body, field", [
    ({"starts_at": at(-49)}, "starts_at"),
    ({"ends_at": at(0)}, "ends_at"),
    ({"ends_at": at(9)}, "ends_at"),
])
def test_rescheduling_into_the_past_or_an_impossible_range_is_422(client, provider, patient, body, field):
    appointment = booked(client, provider, patient["id"], 0, 1)
    response = patch(client, provider, appointment, body)
    assert response.status_code == 422 and response.get_json()["field"] == field


def test_a_cancelled_appointment_is_kept_and_cannot_be_changed(client, provider, patient):
    appointment = booked(client, provider, patient["id"])
    cancelled = patch(client, provider, appointment, {"status": "cancelled"})
    assert cancelled.status_code == 200 and cancelled.headers["ETag"] == '"2"'
    body = cancelled.get_json()
    assert body["status"] == "cancelled" and body["cancelled_at"] is not None
    for change in ({"status": "cancelled"}, {"status": "completed"}, {"starts_at": at(2), "ends_at": at(3)}):
        refused = patch(client, provider, body, change)
        assert refused.status_code == 409 and refused.get_json()["field"] == "status", change
    assert client.get(f"{URL}/{appointment['id']}", headers=provider.headers).get_json() == body


def test_an_appointment_is_completed_only_once_it_has_started(client, provider, patient):
    future = booked(client, provider, patient["id"])
    refused = patch(client, provider, future, {"status": "completed"})
    assert refused.status_code == 409 and refused.get_json()["field"] == "status"
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=2)
    started = client.post(f"/api/v1/patients/{patient['id']}/appointments", headers=provider.headers,
                          json={"starts_at": now.isoformat(), "ends_at": (now + dt.timedelta(minutes=30)).isoformat()})
    done = patch(client, provider, started.get_json(), {"status": "completed"})
    assert done.status_code == 200
    assert (done.get_json()["status"], done.get_json()["cancelled_at"]) == ("completed", None)


@pytest.mark.parametrize("body", [{}, {"status": "scheduled"}, {"status": "cancelled", "starts_at": at(2)},
                                  {"provider_id": str(uuid.uuid4())}, {"patient_id": str(uuid.uuid4())},
                                  {"version": 3}, {"starts_at": "2031-03-01T09:00:00"}, {"colour": "red"}])
def test_patch_refuses_empty_mixed_read_only_unknown_and_naive_bodies(client, provider, patient, body):
    appointment = booked(client, provider, patient["id"])
    response = patch(client, provider, appointment, body)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"


# --- scope, row-level security, audit -----------------------------------------------------

def test_another_providers_patients_appointments_are_404_everywhere(client, make_staff, create_patient):
    owner, other = make_staff("provider"), make_staff("provider")
    patient = create_patient(owner)
    appointment = booked(client, owner, patient["id"])
    assert book(client, other, patient["id"], 2, 3).status_code == 404
    assert client.get(f"/api/v1/patients/{patient['id']}/appointments", headers=other.headers).status_code == 404
    assert client.get(f"{URL}/{appointment['id']}", headers=other.headers).status_code == 404
    assert patch(client, other, appointment, {"status": "cancelled"}).status_code == 404
    assert client.get(f"{URL}/{uuid.uuid4()}", headers=owner.headers).status_code == 404
    assert client.get(f"{URL}/{appointment['id']}", headers=owner.headers).get_json()["status"] == "scheduled"


def test_a_provider_booked_for_a_colleagues_patient_sees_and_manages_the_appointment_not_the_patient(
        client, admin, make_staff, provider, patient):
    covering = make_staff("provider")
    appointment = booked(client, admin, patient["id"], provider_id=str(covering.id))
    assert ids(schedule(client, covering)) == [appointment["id"]]
    assert client.get(f"{URL}/{appointment['id']}", headers=covering.headers).status_code == 200
    assert client.get(f"/api/v1/patients/{patient['id']}", headers=covering.headers).status_code == 404
    assert client.get(f"/api/v1/patients/{patient['id']}/appointments", headers=covering.headers).status_code == 404
    # The patient's own provider sees it on the patient, not in their schedule.
    assert ids(client.get(f"/api/v1/patients/{patient['id']}/appointments", headers=provider.headers)) == [appointment["id"]]
    assert ids(schedule(client, provider)) == []
    assert patch(client, covering, appointment, {"status": "cancelled"}).status_code == 200


def test_an_emergency_grant_opens_the_patients_appointments_audited_as_emergency(client, conn, make_staff, provider, patient):
    responder = make_staff("provider")
    usual = booked(client, provider, patient["id"], 0, 1)
    assert book(client, responder, patient["id"], 2, 3).status_code == 404
    assert client.get(f"{URL}/{usual['id']}", headers=responder.headers).status_code == 404
    assert client.post(f"/api/v1/patients/{patient['id']}/emergency-access", json={"reason": "Collapsed in clinic"},
                       headers=responder.headers).status_code == 201
    urgent = booked(client, responder, patient["id"], 2, 3)
    assert urgent["provider_id"] == str(responder.id)
    assert ids(client.get(f"/api/v1/patients/{patient['id']}/appointments", headers=responder.headers)) == [
        usual["id"], urgent["id"]]
    assert client.get(f"{URL}/{usual['id']}", headers=responder.headers).status_code == 200
    assert client.get(f"{URL}/{urgent['id']}", headers=responder.headers).status_code == 200
    events = conn.execute("SELECT event_type, entity_id FROM audit_events WHERE actor_id = %s"
                          " AND entity_type = 'appointment' AND outcome = 'success' ORDER BY id", (responder.id,)).fetchall()
    assert events == [("appointment.emergency_create", urgent["id"]), ("appointment.emergency_list", None),
                      ("appointment.emergency_read", usual["id"]), ("appointment.read", urgent["id"])]


def test_row_level_security_shows_appointments_where_the_patient_is_or_to_their_provider(
        conn, client, admin, make_staff, create_patient):
    a, b, covering = make_staff("provider"), make_staff("provider"), make_staff("provider")
    of_a = booked(client, a, create_patient(a)["id"])
    of_b = booked(client, b, create_patient(b)["id"])
    lent = booked(client, admin, create_patient(a)["id"], 3, 4, provider_id=str(covering.id))

    def visible(actor_id, role):
        act_as(conn, actor_id, role)
        return {str(r[0]) for r in conn.execute("SELECT id FROM appointments")}

    assert visible(a.id, "provider") == {of_a["id"], lent["id"]}
    assert visible(b.id, "provider") == {of_b["id"]}
    assert visible(covering.id, "provider") == {lent["id"]}
    assert visible(admin.id, "admin") >= {of_a["id"], of_b["id"], lent["id"]}
    assert visible(make_staff("auditor").id, "auditor") == set()
    assert visible(None, None) == set()


def test_the_app_role_cannot_book_for_others_reassign_or_delete_appointments(conn, client, make_staff, create_patient):
    a, b = make_staff("provider"), make_staff("provider")
    patient_a, patient_b = create_patient(a), create_patient(b)
    appointment = booked(client, a, patient_a["id"])
    act_as(conn, a.id, "provider")
    insert = "INSERT INTO appointments (patient_id, provider_id, starts_at, ends_at, created_by) VALUES (%s, %s, %s, %s, %s)"
    for patient_id, provider_id, created_by in ((patient_a["id"], b.id, a.id),    # books another provider
                                                (patient_b["id"], a.id, a.id),    # another provider's patient
                                                (patient_a["id"], a.id, b.id)):   # forged booker
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(insert, (patient_id, provider_id, BASE + dt.timedelta(hours=5), BASE + dt.timedelta(hours=6), created_by))
    for statement in ("UPDATE appointments SET provider_id = %(b)s WHERE id = %(id)s",
                      "UPDATE appointments SET patient_id = %(p)s WHERE id = %(id)s",
                      "DELETE FROM appointments WHERE id = %(id)s"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(statement, {"b": b.id, "p": patient_b["id"], "id": appointment["id"]})
    act_as(conn, b.id, "provider")
    assert conn.execute("UPDATE appointments SET status = 'cancelled', cancelled_at = now() WHERE id = %s",
                        (appointment["id"],)).rowcount == 0


def test_auditors_get_403_on_appointment_routes_and_the_denials_are_audited(client, conn, make_staff, provider, patient):
    auditor = make_staff("auditor")
    appointment = booked(client, provider, patient["id"])
    responses = [book(client, auditor, patient["id"], 2, 3),
                 client.get(f"/api/v1/patients/{patient['id']}/appointments", headers=auditor.headers),
                 schedule(client, auditor),
                 client.get(f"{URL}/{appointment['id']}", headers=auditor.headers),
                 patch(client, auditor, appointment, {"status": "cancelled"})]
    assert [r.status_code for r in responses] == [403] * 5
    denied = conn.execute("SELECT event_type, patient_id::text FROM audit_events WHERE actor_id = %s AND outcome = 'denied'"
                          " ORDER BY id", (auditor.id,)).fetchall()
    assert denied == [("access.denied", patient["id"]), ("access.denied", patient["id"]),
                      ("access.denied", None), ("access.denied", None), ("access.denied", None)]
    entities = conn.execute("SELECT action, entity_type, entity_id::text FROM audit_events WHERE actor_id = %s "
                            "ORDER BY id", (auditor.id,)).fetchall()
    assert entities == [("C", "appointments", patient["id"]), ("R", "appointments", patient["id"]),
                        ("R", "appointments", None), ("R", "appointments", appointment["id"]),
                        ("U", "appointments", appointment["id"])]


def test_every_access_is_audited_with_the_patient_and_field_names_only(client, conn, provider, patient):
    appointment = booked(client, provider, patient["id"])
    conflict = book(client, provider, patient["id"])
    client.get(f"/api/v1/patients/{patient['id']}/appointments?status=scheduled", headers=provider.headers)
    schedule(client, provider)
    client.get(f"{URL}/{appointment['id']}", headers=provider.headers)
    patch(client, provider, appointment, {"starts_at": at(2), "ends_at": at(3)})
    rows = conn.execute("SELECT event_type, action, entity_id, patient_id::text, fields, outcome FROM audit_events"
                        " WHERE actor_id = %s AND entity_type = 'appointment' ORDER BY id", (provider.id,)).fetchall()
    assert conflict.status_code == 409
    assert rows == [
        ("appointment.create", "C", appointment["id"], patient["id"], ["ends_at", "starts_at"], "success"),
        ("appointment.create", "C", None, patient["id"], ["ends_at", "starts_at"], "failure"),
        ("appointment.list", "R", None, patient["id"], ["status"], "success"),
        ("appointment.schedule", "R", None, None, [], "success"),
        ("appointment.schedule", "R", appointment["id"], patient["id"], [], "success"),
        ("appointment.read", "R", appointment["id"], patient["id"], [], "success"),
        ("appointment.update", "U", appointment["id"], patient["id"], ["ends_at", "starts_at"], "success"),
    ]


def test_cancelling_a_patients_upcoming_appointments_frees_their_providers_slots(db, client, provider, create_patient):
    patient, other = create_patient(provider), create_patient(provider)
    booked(client, provider, patient["id"], 0, 1)
    booked(client, provider, patient["id"], 2, 3)
    actor = Actor(id=provider.id, role="provider")

    assert db.run(lambda uow: uow.appointments.cancel_upcoming_for_patient(patient["id"]), actor=actor) == 2
    booked(client, provider, other["id"], 0, 1)
    statuses = {a["status"] for a in client.get(f"/api/v1/patients/{patient['id']}/appointments",
                                                  headers=provider.headers).get_json()}
    assert statuses == {"cancelled"}


def test_reading_or_changing_an_appointment_through_a_grant_runs_one_read_and_is_audited_as_emergency(
        client, conn, make_staff, provider, patient, monkeypatch):
    responder = make_staff("provider")
    appointment = booked(client, provider, patient["id"])
    assert client.post(f"/api/v1/patients/{patient['id']}/emergency-access", json={"reason": "Collapsed in clinic"},
                       headers=responder.headers).status_code == 201
    executed = statements_run(monkeypatch)

    assert client.get(f"{URL}/{appointment['id']}", headers=responder.headers).status_code == 200
    assert executed == ["get_token_actor", "get_appointment", "insert_audit_events"]
    executed.clear()
    assert patch(client, responder, appointment, {"status": "cancelled"}).status_code == 200
    assert executed == ["get_token_actor", "get_appointment", "update_appointment_status", "insert_audit_events"]
    executed.clear()
    assert client.get(f"{URL}/{appointment['id']}", headers=provider.headers).status_code == 200
    assert executed == ["get_token_actor", "get_appointment", "insert_audit_events"]

    monkeypatch.undo()
    events = conn.execute("SELECT actor_id, event_type, patient_id::text FROM audit_events WHERE entity_id = %s "
                          "AND action IN ('R', 'U') ORDER BY id", (appointment["id"],)).fetchall()
    assert events == [(responder.id, "appointment.emergency_read", patient["id"]),
                      (responder.id, "appointment.emergency_update", patient["id"]),
                      (provider.id, "appointment.read", patient["id"])]


def test_reading_an_appointment_booked_with_a_colleague_is_no_emergency_access_for_either_provider(
        client, conn, admin, make_staff, provider, patient):
    covering = make_staff("provider")
    appointment = booked(client, admin, patient["id"], provider_id=str(covering.id))
    for staff in (covering, provider):
        assert client.get(f"{URL}/{appointment['id']}", headers=staff.headers).status_code == 200
    events = conn.execute("SELECT actor_id, event_type FROM audit_events WHERE entity_id = %s "
                          "AND event_type LIKE 'appointment.%%read' ORDER BY id", (appointment["id"],)).fetchall()
    assert events == [(covering.id, "appointment.read"), (provider.id, "appointment.read")]
