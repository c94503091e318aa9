"""Staff sign-in, sign-out and token lifetime. (The sign-in throttles: test_login_throttle.py.)"""
import pytest


def login(client, email, password, addr="10.0.0.1"):
    return client.post("/api/v1/auth/tokens", json={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": addr})


def audit_rows(conn, event_type):
    return conn.execute(
        "SELECT actor_id, outcome, host(client_addr), fields FROM audit_events WHERE event_type = %s ORDER BY id",
        (event_type,)).fetchall()


def test_login_returns_a_bearer_token_that_authenticates(client, provider):
    response = login(client, provider.email, provider.password)
    assert response.status_code == 201
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["user_id"] == str(provider.id)
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200 and me.get_json()["email"] == provider.email


def test_login_email_is_case_insensitive(client, provider):
    assert login(client, provider.email.upper(), provider.password).status_code == 201


def test_only_the_sha256_of_a_token_is_stored(client, conn, provider):
    token = login(client, provider.email, provider.password).get_json()["token"]
    stored = conn.execute("SELECT token_hash FROM auth_tokens WHERE user_id = %s", (provider.id,)).fetchall()
    import hashlib
    assert hashlib.sha256(token.encode()).digest() in [bytes(r[0]) for r in stored]
    assert all(token.encode() not in bytes(r[0]) for r in stored)


def test_wrong_password_is_401_problem_and_audited_as_failed(client, conn, provider):
    response = login(client, provider.email, "wrong password!!")
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert "password" not in response.get_data(as_text=True).lower().replace("email or password", "")
    rows = audit_rows(conn, "auth.login")
    assert rows[-1][:3] == (provider.id, "failure", "10.0.0.1")


def test_unknown_email_is_the_same_401_as_a_wrong_password(client, provider):
    unknown = login(client, "nobody@clarity.test", "whatever password")
    wrong = login(client, provider.email, "whatever password")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.get_json()["detail"] == wrong.get_json()["detail"]


def test_successful_login_is_audited(client, conn, provider):
    login(client, provider.email, provider.password)
    assert audit_rows(conn, "auth.login")[-1][:2] == (provider.id, "success")


def test_unknown_email_is_audited_as_a_failure_of_no_account(client, conn):
    assert login(client, "nobody@clarity.test", "whatever password").status_code == 401
    assert audit_rows(conn, "auth.login")[-1][:3] == (None, "failure", "10.0.0.1")


def test_a_disabled_account_with_the_right_password_gets_the_same_401(client, conn, provider):
    conn.execute("UPDATE users SET disabled_at = now() WHERE id = %s", (provider.id,))
    response = login(client, provider.email, provider.password)
    assert response.status_code == 401
    assert response.get_json()["detail"] == "Email or password is incorrect."
    assert audit_rows(conn, "auth.login")[-1][:2] == (provider.id, "failure")


def test_repeated_failures_throttle_the_account_from_that_address_even_with_the_right_password(client, app, provider):
    limit = app.extensions["clarity"].settings.login_max_failures_per_pair
    for _ in range(limit):
        assert login(client, provider.email, "wrong password!!").status_code == 401
    response = login(client, provider.email, provider.password)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert login(client, provider.email, provider.password, addr="10.0.0.2").status_code == 201


def test_the_sign_in_route_documents_its_body_and_answers(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/auth/tokens"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Login"}
    assert set(spec["components"]["schemas"]["Login"]["required"]) == {"email", "password"}
    assert {"201", "401", "429"} <= set(operation["responses"])
    assert operation["security"] == []


def test_logout_revokes_the_token_at_once(client, provider):
    assert client.delete("/api/v1/auth/tokens/current", headers=provider.headers).status_code == 204
    assert client.get("/api/v1/users/me", headers=provider.headers).status_code == 401


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-token", "Basic abc"])
def test_missing_or_bad_token_is_401_with_www_authenticate(client, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/users/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_expires_after_idle_timeout(client, conn, provider):
    conn.execute("UPDATE auth_tokens SET last_used_at = now() - interval '1 day' WHERE user_id = %s", (provider.id,))
    assert client.get("/api/v1/users/me", headers=provider.headers).status_code == 401


def test_token_expires_at_its_absolute_age_even_when_active(client, conn, provider):
    conn.execute("UPDATE auth_tokens SET expires_at = now() - interval '1 second' WHERE user_id = %s", (provider.id,))
    assert client.get("/api/v1/users/me", headers=provider.headers).status_code == 401


def test_using_a_token_refreshes_its_idle_clock(client, conn, provider):
    conn.execute("UPDATE auth_tokens SET last_used_at = now() - interval '5 minutes' WHERE user_id = %s", (provider.id,))
    assert client.get("/api/v1/users/me", headers=provider.headers).status_code == 200
    idle = conn.execute("SELECT now() - last_used_at FROM auth_tokens WHERE user_id = %s", (provider.id,)).fetchone()[0]
    assert idle.total_seconds() < 60
