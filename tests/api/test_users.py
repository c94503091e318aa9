"""Staff user management: admin only; disabling or re-keying a user ends their sessions."""
import pytest

URL = "/api/v1/users"


def new_user(**overrides):
    body = {"email": "new.user@clarity.test", "display_name": "New User", "role": "provider",
            "password": "a long enough password"}
    body.update(overrides)
    return body


def test_me_returns_the_signed_in_user_without_secrets(client, provider):
    response = client.get(f"{URL}/me", headers=provider.headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == str(provider.id) and body["role"] == "provider" and body["disabled"] is False
    assert "password" not in body and "password_hash" not in body


def test_admin_creates_a_user_who_can_then_sign_in(client, admin):
    response = client.post(URL, json=new_user(), headers=admin.headers)
    assert response.status_code == 201
    assert response.headers["Location"] == f"{URL}/{response.get_json()['id']}"
    login = client.post("/api/v1/auth/tokens", json={"email": "new.user@clarity.test", "password": "a long enough password"})
    assert login.status_code == 201


def test_passwords_are_stored_as_argon2id_hashes(client, conn, admin):
    client.post(URL, json=new_user(), headers=admin.headers)
    stored = conn.execute("SELECT password_hash FROM users WHERE email = 'new.user@clarity.test'").fetchone()[0]
    assert stored.startswith("$argon2id$") and "a long enough password" not in stored


@pytest.mark.parametrize("role", ["provider", "auditor"])
def test_only_admins_manage_users(client, make_staff, role):
    staff = make_staff(role)
    assert client.post(URL, json=new_user(), headers=staff.headers).status_code == 403
    assert client.get(URL, headers=staff.headers).status_code == 403
    patch = client.patch(f"{URL}/{staff.id}", json={"role": "admin"}, headers={**staff.headers, "If-Match": '"1"'})
    assert patch.status_code == 403


def test_duplicate_email_is_409_naming_the_field(client, admin, provider):
    response = client.post(URL, json=new_user(email=provider.email.upper()), headers=admin.headers)
    assert response.status_code == 409 and response.get_json()["field"] == "email"


@pytest.mark.parametrize("overrides", [{"role": "superuser"}, {"password": "short"}, {"email": "not-an-email"},
                                       {"display_name": ""}, {"id": "x"}])
def test_invalid_users_are_422(client, admin, overrides):
    assert client.post(URL, json=new_user(**overrides), headers=admin.headers).status_code == 422


def test_list_users_pages_with_link_header(client, admin, make_staff):
    for _ in range(3):
        make_staff("provider")
    seen, url = [], f"{URL}?limit=2"
    while url:
        response = client.get(url, headers=admin.headers)
        assert response.status_code == 200
        seen += [u["id"] for u in response.get_json()]
        link = response.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    assert len(seen) == len(set(seen)) >= 4


def test_disabling_a_user_kills_their_tokens_and_blocks_sign_in(client, admin, provider):
    response = client.patch(f"{URL}/{provider.id}", json={"disabled": True}, headers={**admin.headers, "If-Match": '"1"'})
    assert response.status_code == 200 and response.get_json()["disabled"] is True
    assert client.get(f"{URL}/me", headers=provider.headers).status_code == 401
    login = client.post("/api/v1/auth/tokens", json={"email": provider.email, "password": provider.password})
    assert login.status_code == 401


def test_setting_a_password_ends_existing_sessions(client, admin, provider):
    response = client.patch(f"{URL}/{provider.id}", json={"password": "a brand new password"},
                            headers={**admin.headers, "If-Match": '"1"'})
    assert response.status_code == 200
    assert client.get(f"{URL}/me", headers=provider.headers).status_code == 401
    login = client.post("/api/v1/auth/tokens", json={"email": provider.email, "password": "a brand new password"})
    assert login.status_code == 201


def test_user_patch_needs_if_match_and_a_current_version(client, admin, provider):
    url = f"{URL}/{provider.id}"
    assert client.patch(url, json={"display_name": "X"}, headers=admin.headers).status_code == 428
    assert client.patch(url, json={"display_name": "X"}, headers={**admin.headers, "If-Match": '"5"'}).status_code == 412
    assert client.patch(f"{URL}/00000000-0000-0000-0000-000000000001", json={"display_name": "X"},
                        headers={**admin.headers, "If-Match": '"1"'}).status_code == 404
