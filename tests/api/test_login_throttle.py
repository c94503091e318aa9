"""Sign-in throttling: by account and address, a backoff per account, a limit per address,
the admin's clear; and every attempt, a malformed one too, audited and counted."""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid

import pytest

from clarity import create_app
from clarity.queries import load
from clarity.services.auth import account_backoff_wait
from tests.conftest import make_settings

URL = "/api/v1/auth/tokens"
PASSWORD = "correct horse battery"
SMALL = dict(login_max_failures_per_pair=3, login_account_backoff_after=6, login_account_backoff_max_seconds=60,
             login_max_failures_per_address=10)


@pytest.fixture
def throttled(server, test_database, keyring, conn):
    """The test client of an app with small limits (SMALL), on the test's rolled-back connection."""
    app = create_app(make_settings(server, test_database, **SMALL), keyring=keyring)
    app.extensions["clarity"].db.use_connection(conn)
    return app.test_client()


def sign_in(client, email, password, addr="10.0.0.7"):
    return client.post(URL, json={"email": email, "password": password}, environ_base={"REMOTE_ADDR": addr})


def post_raw(client, data, addr="10.0.0.7", content_type="application/json"):
    return client.post(URL, data=data, content_type=content_type, environ_base={"REMOTE_ADDR": addr})


def fail(client, email, times, addr="10.0.0.7"):
    for _ in range(times):
        assert sign_in(client, email, "wrong password!!", addr).status_code == 401


def login_events(conn):
    """(actor_id, outcome, client address) of every auth.login event, oldest first."""
    return conn.execute("SELECT actor_id, outcome, host(client_addr) FROM audit_events "
                        "WHERE event_type = 'auth.login' ORDER BY id").fetchall()


def retry_after(response) -> int:
    assert response.status_code == 429, response.get_json()
    assert response.mimetype == "application/problem+json"
    return int(response.headers["Retry-After"])


# The pair: one account from one address.

def test_failures_of_an_account_from_one_address_throttle_that_pair_with_a_computed_retry_after(throttled, provider):
    fail(throttled, provider.email, 3)

    response = sign_in(throttled, provider.email, provider.password)

    wait = retry_after(response)
    assert 890 <= wait <= 901  # the oldest of the 3 failures leaves the 900 s window then


def test_a_colleague_behind_the_same_address_signs_in_while_another_account_is_throttled(throttled, make_staff):
    typo_prone, colleague = make_staff("provider"), make_staff("provider")
    fail(throttled, typo_prone.email, 3)
    assert sign_in(throttled, typo_prone.email, typo_prone.password).status_code == 429

    assert sign_in(throttled, colleague.email, colleague.password).status_code == 201


def test_the_throttled_account_still_signs_in_from_another_address(throttled, provider):
    fail(throttled, provider.email, 3, addr="203.0.113.9")

    assert sign_in(throttled, provider.email, provider.password, addr="203.0.113.9").status_code == 429
    assert sign_in(throttled, provider.email, provider.password, addr="10.0.0.8").status_code == 201


def test_a_success_from_the_address_restarts_the_pairs_count(throttled, provider):
    fail(throttled, provider.email, 2)
    assert sign_in(throttled, provider.email, provider.password).status_code == 201

    fail(throttled, provider.email, 2)
    assert sign_in(throttled, provider.email, provider.password).status_code == 201


# Every 429 is audited, and does not count.

def test_each_throttled_attempt_is_audited_as_denied_and_does_not_extend_the_throttle(throttled, conn, provider):
    fail(throttled, provider.email, 3)
    first = retry_after(sign_in(throttled, provider.email, "wrong password!!"))

    waits = [retry_after(sign_in(throttled, provider.email, "wrong password!!")) for _ in range(5)]

    assert max(waits) <= first  # retrying early never pushes the end of the throttle later
    events = login_events(conn)
    assert [outcome for _, outcome, _ in events] == ["failure"] * 3 + ["denied"] * 6
    assert {actor for actor, _, _ in events} == {provider.id}


# The account's backoff: failures spread over many addresses.

def test_failures_from_many_addresses_slow_the_account_everywhere_not_just_those_addresses(throttled, provider):
    for i in range(6):
        fail(throttled, provider.email, 1, addr=f"198.51.100.{i}")

    response = sign_in(throttled, provider.email, provider.password, addr="192.0.2.1")

    assert 1 <= retry_after(response) <= 3  # 1 s after the 6th failure (plus this test's age)


def test_the_account_backoff_doubles_with_each_further_failure_up_to_its_cap(throttled, conn, provider):
    def add_failures(count):
        conn.execute("INSERT INTO audit_events (actor_id, action, event_type, outcome, client_addr) "
                     "SELECT %s, 'E', 'auth.login', 'failure', ('198.51.100.' || n)::inet "
                     "FROM generate_series(1, %s) n", (provider.id, count))

    add_failures(9)  # 6 -> 1 s, 7 -> 2 s, 8 -> 4 s, 9 -> 8 s
    assert 8 <= retry_after(sign_in(throttled, provider.email, provider.password)) <= 10
    add_failures(20)  # 2 ** 23 s, capped at 60 s
    assert 60 <= retry_after(sign_in(throttled, provider.email, provider.password)) <= 62


def test_an_address_the_account_signed_in_from_recently_is_exempt_from_its_backoff(throttled, provider):
    assert sign_in(throttled, provider.email, provider.password, addr="10.1.1.1").status_code == 201
    for i in range(6):
        fail(throttled, provider.email, 1, addr=f"198.51.100.{i}")
    assert sign_in(throttled, provider.email, provider.password, addr="192.0.2.1").status_code == 429

    assert sign_in(throttled, provider.email, provider.password, addr="10.1.1.1").status_code == 201


def test_a_correct_password_signs_in_from_an_address_where_only_another_account_is_attacked(throttled, make_staff):
    victim, colleague = make_staff("provider"), make_staff("provider")
    fail(throttled, victim.email, 3, addr="10.0.0.7")  # an attack on the victim, from the colleague's address
    for i in range(3):  # and from elsewhere: the victim's account backs off too
        fail(throttled, victim.email, 1, addr=f"198.51.100.{i}")
    assert sign_in(throttled, victim.email, victim.password, addr="10.0.0.7").status_code == 429

    assert sign_in(throttled, colleague.email, colleague.password, addr="10.0.0.7").status_code == 201


@pytest.mark.slow
def test_the_backoff_lifts_by_itself_and_the_right_password_then_signs_in(server, fresh_database, keyring):
    """Real commits and real time: the backoff slows the owner, it never locks them out."""
    settings = make_settings(server, fresh_database, login_account_backoff_after=2,
                             login_account_backoff_max_seconds=1)
    app = create_app(settings, keyring=keyring)
    db, client = app.extensions["clarity"].db, app.test_client()
    try:
        email = add_user(app, "backoff@clarity.test")
        fail(client, email, 1, addr="198.51.100.1")
        fail(client, email, 1, addr="198.51.100.2")
        assert retry_after(sign_in(client, email, PASSWORD, addr="192.0.2.1")) == 1

        time.sleep(1.2)

        assert sign_in(client, email, PASSWORD, addr="192.0.2.1").status_code == 201
    finally:
        db.close()


def test_account_backoff_is_one_second_at_the_threshold_doubling_to_the_cap():
    assert account_backoff_wait(5, 0.0, after=6, max_seconds=60) is None
    assert account_backoff_wait(6, 0.0, after=6, max_seconds=60) == 1
    assert account_backoff_wait(9, 3.0, after=6, max_seconds=60) == 5
    assert account_backoff_wait(10_000, 0.0, after=6, max_seconds=60) == 60
    assert account_backoff_wait(6, None, after=6, max_seconds=60) is None


# The address: credential stuffing across many accounts.

def test_one_address_failing_against_many_accounts_is_throttled_for_every_account(throttled, provider):
    for i in range(10):
        fail(throttled, f"stuffed{i}@clarity.test", 1, addr="203.0.113.50")

    assert 890 <= retry_after(sign_in(throttled, provider.email, provider.password, addr="203.0.113.50")) <= 901
    assert sign_in(throttled, provider.email, provider.password, addr="203.0.113.51").status_code == 201


def test_a_typo_prone_user_cannot_throttle_their_address_alone(throttled, make_staff):
    typo_prone, colleague = make_staff("provider"), make_staff("provider")
    fail(throttled, typo_prone.email, 3)
    for _ in range(20):  # throttled attempts do not count toward the address either
        sign_in(throttled, typo_prone.email, "wrong password!!")

    assert sign_in(throttled, colleague.email, colleague.password).status_code == 201


# The admin's clear.

def test_an_admin_clears_an_accounts_throttle_and_counting_restarts(throttled, conn, admin, provider):
    fail(throttled, provider.email, 3)
    for i in range(3):
        fail(throttled, provider.email, 1, addr=f"198.51.100.{i}")
    assert sign_in(throttled, provider.email, provider.password).status_code == 429

    response = throttled.delete(f"/api/v1/auth/throttles/{provider.id}", headers=admin.headers)

    assert response.status_code == 204
    assert conn.execute("SELECT actor_id, entity_type, entity_id, outcome FROM audit_events "
                        "WHERE event_type = 'auth.throttle_clear'").fetchall() == [
        (admin.id, "user", str(provider.id), "success")]
    fail(throttled, provider.email, 2)
    assert sign_in(throttled, provider.email, "wrong password!!").status_code == 401  # the 3rd since the clear
    assert sign_in(throttled, provider.email, provider.password).status_code == 429


def test_a_cleared_account_signs_in_at_once(throttled, admin, provider):
    fail(throttled, provider.email, 3)
    assert throttled.delete(f"/api/v1/auth/throttles/{provider.id}", headers=admin.headers).status_code == 204

    assert sign_in(throttled, provider.email, provider.password).status_code == 201


@pytest.mark.parametrize("role", ["provider", "auditor"])
def test_only_an_admin_clears_a_throttle_and_a_refusal_is_audited(throttled, conn, make_staff, provider, role):
    caller = make_staff(role)
    fail(throttled, provider.email, 3)

    assert throttled.delete(f"/api/v1/auth/throttles/{provider.id}", headers=caller.headers).status_code == 403

    assert sign_in(throttled, provider.email, provider.password).status_code == 429
    outcomes = conn.execute("SELECT outcome FROM audit_events WHERE event_type IN "
                            "('auth.throttle_clear', 'access.denied') AND actor_id = %s", (caller.id,)).fetchall()
    assert outcomes == [("denied",)]


def test_clearing_the_throttle_of_no_user_is_404(throttled, admin):
    assert throttled.delete(f"/api/v1/auth/throttles/{uuid.uuid4()}", headers=admin.headers).status_code == 404


def test_clearing_a_throttle_needs_a_token(throttled, provider):
    assert throttled.delete(f"/api/v1/auth/throttles/{provider.id}").status_code == 401


# Malformed sign-ins: answered 4xx, audited, counted.

def malformed_bodies(email):
    return {
        "lone surrogate password": (json.dumps({"email": email, "password": "x"}).replace('"x"', '"\\ud800"'), 422),
        "5,000-digit password": (json.dumps({"email": email}).replace("}", ', "password": ' + "9" * 5000 + "}"), 422),
        "NaN password": (json.dumps({"email": email}).replace("}", ', "password": NaN}'), 422),
        "missing password": (json.dumps({"email": email}), 422),
        "password not text": (json.dumps({"email": email, "password": ["a", "list"]}), 422),
        "control character in the password": (json.dumps({"email": email, "password": "abc\u0001def"}), 422),
        "unknown field": (json.dumps({"email": email, "password": "whatever it is", "remember": True}), 422),
        "not JSON": ('{"email": "' + email + '", "password": ', 400),
    }


@pytest.mark.parametrize("case", list(malformed_bodies("x@y.z")))
def test_a_malformed_sign_in_is_4xx_and_audited_as_a_failure_of_the_account_it_names(client, conn, provider, case):
    data, status = malformed_bodies(provider.email)[case]

    response = post_raw(client, data)

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    text = response.get_data(as_text=True)
    assert provider.email not in text and "9999" not in text and "list" not in text
    expected_actor = None if case == "not JSON" else provider.id
    assert login_events(conn) == [(expected_actor, "failure", "10.0.0.7")]


@pytest.mark.parametrize("data, status", [
    (json.dumps({"email": "a" * 300 + "@clarity.test", "password": "whatever it is"}), 422),
    (json.dumps({"email": "not an email", "password": "whatever it is"}), 422),
    (json.dumps(["email", "password"]), 422),
    (json.dumps({"password": "whatever it is"}), 422),
    ("", 400),
])
def test_a_sign_in_naming_no_account_is_4xx_and_audited_as_a_failure_of_none(client, conn, data, status):
    response = post_raw(client, data)

    assert response.status_code == status
    assert login_events(conn) == [(None, "failure", "10.0.0.7")]


def test_a_malformed_sign_in_names_the_field_never_the_value(client, provider):
    body = json.dumps({"email": provider.email}).replace("}", ', "password": ' + "7" * 5000 + "}")

    problem = post_raw(client, body).get_json()

    assert problem["field"] == "password"
    assert "7777" not in json.dumps(problem) and provider.email not in json.dumps(problem)


def test_a_sign_in_failing_its_schema_gets_the_schemas_messages_as_any_route_does(client, provider):
    problem = post_raw(client, json.dumps({"email": provider.email, "password": "", "remember": True})).get_json()

    assert problem["status"] == 422
    assert set(problem["errors"]["json"]) == {"password", "remember"}
    assert provider.email not in json.dumps(problem)


def test_a_sign_in_that_is_not_json_at_all_is_415_and_still_audited(client, conn, provider):
    response = post_raw(client, f"email={provider.email}&password=x", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert response.mimetype == "application/problem+json"
    assert login_events(conn) == [(None, "failure", "10.0.0.7")]


def test_malformed_sign_ins_count_toward_the_pair_throttle(throttled, conn, provider):
    bodies = malformed_bodies(provider.email)
    for case in ("lone surrogate password", "5,000-digit password", "missing password"):
        assert post_raw(throttled, bodies[case][0]).status_code == 422

    assert retry_after(sign_in(throttled, provider.email, provider.password)) > 0
    assert post_raw(throttled, bodies["missing password"][0]).status_code == 429  # throttled first, not counted
    assert [outcome for _, outcome, _ in login_events(conn)] == ["failure"] * 3 + ["denied"] * 2


def test_unattributable_malformed_sign_ins_count_toward_the_address(throttled, provider):
    for _ in range(10):
        assert post_raw(throttled, "{not json", addr="203.0.113.60").status_code == 400

    assert sign_in(throttled, provider.email, provider.password, addr="203.0.113.60").status_code == 429


# Concurrency: attempts on one account are counted one after another.

@pytest.mark.slow
def test_concurrent_guesses_on_one_account_get_no_more_than_the_pairs_limit(server, fresh_database, keyring):
    settings = make_settings(server, fresh_database, pool_max_size=12, login_max_failures_per_pair=3)
    app = create_app(settings, keyring=keyring)
    db = app.extensions["clarity"].db
    try:
        email = add_user(app, "concurrent@clarity.test")
        statuses, start = [], threading.Barrier(10)

        def guess():
            client = app.test_client()
            start.wait()
            statuses.append(sign_in(client, email, "wrong password!!").status_code)

        threads = [threading.Thread(target=guess) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sorted(statuses) == [401] * 3 + [429] * 7
    finally:
        db.close()


def add_user(app, email) -> str:
    clarity = app.extensions["clarity"]
    clarity.db.run(lambda uow: uow.users.add(email=email, display_name="Throttle test", role="provider",
                                             password_hash=clarity.passwords.hash(PASSWORD)))
    return email


# The counting query stays index-served.

THROTTLE_INDEXES = {"audit_events_login_failure_actor_id_occurred_at_idx",
                    "audit_events_login_failure_client_addr_occurred_at_idx",
                    "audit_events_login_success_actor_id_occurred_at_idx",
                    "audit_events_throttle_clear_entity_id_occurred_at_idx"}


def scans(node):
    """(node type, index name) of every plan node that reads audit_events."""
    if node.get("Relation Name") == "audit_events" or node.get("Index Name"):
        yield node["Node Type"], node.get("Index Name")
    for child in node.get("Plans", []):
        yield from scans(child)


def test_the_throttle_query_reads_audit_events_only_through_its_partial_indexes(conn):
    """Partial indexes over failures, successes and clears: a flood of throttled attempts, or
    of any other event, never lengthens a count."""
    conn.execute("SET LOCAL enable_seqscan = off")
    plan = conn.execute("EXPLAIN (FORMAT JSON) " + load().audit.get_login_throttle.sql, {
        "user_id": uuid.uuid4(), "client_addr": "10.0.0.7", "window_seconds": 900,
        "account_window_seconds": 86400, "familiar_seconds": 30 * 86400, "max_per_pair": 5,
        "max_per_address": 100}).fetchone()[0]

    found = [(kind, index) for kind, index in scans(plan[0]["Plan"]) if kind != "Bitmap Heap Scan"]
    assert found and all(index in THROTTLE_INDEXES for _, index in found), found


# The counts, straight from the repository.

def test_the_counts_skip_denied_attempts_other_events_and_what_a_success_or_clear_restarted(db, conn):
    user, other = uuid.uuid4(), uuid.uuid4()
    here, elsewhere = "198.51.100.1", "198.51.100.2"

    def event(outcome, addr, *, event_type="auth.login", actor=user, entity_id=None, ago="0 seconds"):
        conn.execute("INSERT INTO audit_events (occurred_at, actor_id, action, event_type, entity_type, entity_id,"
                     " outcome, client_addr) VALUES (now() - %s::interval, %s, 'E', %s, 'user', %s, %s, %s)",
                     (ago, actor, event_type, entity_id, outcome, addr))

    def throttle(user_id=user, addr=here):
        return db.run(lambda uow: uow.audit_events.get_login_throttle(
            user_id=user_id, client_addr=addr, window_seconds=900, account_window_seconds=86400,
            familiar_seconds=30 * 86400, max_per_pair=2, max_per_address=3))

    event("failure", here, ago="2 days")  # outside every window
    event("failure", here, ago="1 hour")  # the account's, not the pair's any more
    event("success", elsewhere, ago="50 minutes")  # restarts the account's count
    event("failure", here, ago="40 minutes")
    event("failure", here, ago="10 minutes")
    event("failure", elsewhere, ago="5 minutes")
    event("denied", here, ago="4 minutes")  # throttled attempts never count
    event("failure", here, event_type="user.update", ago="3 minutes")
    event("failure", here, actor=other, ago="2 minutes")

    counts = throttle()
    assert counts.account_failures == 3 and 299 <= counts.account_failure_age <= 301
    assert counts.pair_retry_after is None  # one pair failure in the window
    assert counts.address_retry_after is None and not counts.familiar  # two address failures

    event("failure", here, actor=None, ago="1 minute")
    event("failure", here, ago="30 seconds")
    counts = throttle()
    assert 299 <= counts.pair_retry_after <= 301  # the 2nd newest pair failure is 10 minutes old
    assert 779 <= counts.address_retry_after <= 781  # the 3rd newest address failure, 2 minutes old
    assert throttle(addr=elsewhere).pair_retry_after is None

    event("success", here, event_type="auth.throttle_clear", actor=uuid.uuid4(), entity_id=str(user))
    event("success", here, ago="1 day")
    counts = throttle()
    assert counts.account_failures == 0 and counts.pair_retry_after is None and counts.familiar
    assert counts.address_retry_after is not None  # the address's throttle is not the account's
    assert throttle(user_id=None) == dataclasses.replace(counts, familiar=False)
