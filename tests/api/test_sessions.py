"""Sessions: a user lists and ends their own; a password change ends them all."""


def sign_in(client, staff, addr="10.1.1.1"):
    response = client.post("/api/v1/auth/tokens", json={"email": staff.email, "password": staff.password},
                           environ_base={"REMOTE_ADDR": addr})
    return {"Authorization": f"Bearer {response.get_json()['token']}"}


def test_a_user_lists_their_live_sessions_and_sees_which_is_current(client, provider, make_staff):
    second = sign_in(client, provider, addr="10.1.1.2")
    make_staff("provider")  # someone else's session must not show
    response = client.get("/api/v1/auth/sessions", headers=second)
    assert response.status_code == 200
    sessions = response.get_json()
    assert len(sessions) == 2
    assert [s["current"] for s in sessions].count(True) == 1
    assert {s["client_addr"] for s in sessions} == {None, "10.1.1.2"}
    assert all("token" not in s for s in sessions)


def test_a_user_ends_one_of_their_sessions_at_once(client, provider):
    other = sign_in(client, provider)
    sessions = client.get("/api/v1/auth/sessions", headers=provider.headers).get_json()
    other_id = next(s["id"] for s in sessions if not s["current"])
    assert client.delete(f"/api/v1/auth/sessions/{other_id}", headers=provider.headers).status_code == 204
    assert client.get("/api/v1/users/me", headers=other).status_code == 401
    assert client.get("/api/v1/users/me", headers=provider.headers).status_code == 200
    assert client.delete(f"/api/v1/auth/sessions/{other_id}", headers=provider.headers).status_code == 404


def test_a_user_cannot_end_someone_elses_session(client, provider, make_staff):
    victim = make_staff("provider")
    victim_session = client.get("/api/v1/auth/sessions", headers=victim.headers).get_json()[0]["id"]
    assert client.delete(f"/api/v1/auth/sessions/{victim_session}", headers=provider.headers).status_code == 404
    assert client.get("/api/v1/users/me", headers=victim.headers).status_code == 200


def test_changing_ones_password_ends_every_session(client, provider):
    other = sign_in(client, provider)
    response = client.post("/api/v1/users/me/password", headers=provider.headers,
                           json={"current_password": provider.password, "new_password": "a fresh long password"})
    assert response.status_code == 204
    assert client.get("/api/v1/users/me", headers=provider.headers).status_code == 401
    assert client.get("/api/v1/users/me", headers=other).status_code == 401
    login = client.post("/api/v1/auth/tokens", json={"email": provider.email, "password": "a fresh long password"})
    assert login.status_code == 201


def test_a_wrong_current_password_changes_nothing(client, provider):
    response = client.post("/api/v1/users/me/password", headers=provider.headers,
                           json={"current_password": "not my password", "new_password": "a fresh long password"})
    assert response.status_code == 422 and response.get_json()["field"] == "current_password"
    assert client.get("/api/v1/users/me", headers=provider.headers).status_code == 200


def test_a_short_new_password_is_refused(client, provider):
    response = client.post("/api/v1/users/me/password", headers=provider.headers,
                           json={"current_password": provider.password, "new_password": "short"})
    assert response.status_code == 422
