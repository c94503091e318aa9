"""Authentication comes first: every route but sign-in and health answers 401 to a bad token
before reading anything of the body, and a role that lacks the function gets 403, also before
the body is read. Routes are walked from the OpenAPI document, so a new route is covered."""
from __future__ import annotations

import io
import re
import uuid

import pytest

from clarity.api.access import is_public
from clarity.security.access import ROLES, new_token

# Would fail validation everywhere (unknown field, wrong types), and is big enough that a
# parser reading it could not go unnoticed.
HOSTILE = b'{"unknown_field": ' + b"[" * 20 + b"1" + b"]" * 20 + b', "padding": "' + b"x" * 4096 + b'"}'
PUBLIC_PATHS = {("/api/v1/auth/tokens", "post")}


class Stream(io.BytesIO):
    """A request body that remembers whether anything read it."""

    @property
    def was_read(self) -> bool:
        return self.tell() > 0


def operations(client):
    document = client.get("/api/v1/openapi.json").get_json()
    for path, item in document["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "heart_rate" if m.group(0) == "{kind}" else str(uuid.uuid4()), path)


def call(client, path, method, headers):
    body = Stream(HOSTILE)
    response = client.open(concrete(path) + "?limit=oops&unknown=1", method=method.upper(), input_stream=body,
                           content_length=len(HOSTILE), headers={"Content-Type": "application/json",
                                                                  "If-Match": '"1"', **headers})
    return response, body


@pytest.fixture
def bad_tokens(conn, make_staff):
    """Each kind of token that must get 401: missing, malformed, unknown, expired, idle too
    long, revoked, of a disabled user."""
    expired, idle, revoked, disabled = (make_staff("admin") for _ in range(4))
    conn.execute("UPDATE auth_tokens SET expires_at = now() - interval '1 second' WHERE user_id = %s", (expired.id,))
    conn.execute("UPDATE auth_tokens SET last_used_at = now() - interval '1 day' WHERE user_id = %s", (idle.id,))
    conn.execute("UPDATE auth_tokens SET revoked_at = now() WHERE user_id = %s", (revoked.id,))
    conn.execute("UPDATE users SET disabled_at = now() WHERE id = %s", (disabled.id,))
    return {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {expired.token}"},
        "empty bearer": {"Authorization": "Bearer "},
        "not ascii": {"Authorization": "Bearer t\u00f6ken"},
        "too long": {"Authorization": "Bearer " + "a" * 5000},
        "unknown": {"Authorization": f"Bearer {new_token()[0]}"},
        "expired": expired.headers,
        "idle": idle.headers,
        "revoked": revoked.headers,
        "disabled user": disabled.headers,
    }


def test_the_walk_covers_every_operation_and_only_sign_in_is_public(client, app):
    walked = set(operations(client))
    assert len(walked) >= 40
    public = {(p, m) for p, m in walked if is_public(_endpoint(app, p, m))}
    assert public == PUBLIC_PATHS


def test_every_route_answers_401_to_every_bad_token_without_reading_the_body(client, bad_tokens):
    for path, method in operations(client):
        if (path, method) in PUBLIC_PATHS:
            continue
        for kind, headers in bad_tokens.items():
            response, body = call(client, path, method, headers)
            assert response.status_code == 401, (method, path, kind, response.get_json())
            assert not body.was_read, (method, path, kind)
            problem = response.get_json()
            assert response.mimetype == "application/problem+json"
            assert "errors" not in problem and "field" not in problem
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_role_without_the_function_gets_403_without_the_body_being_read(client, app, make_staff, conn):
    staff = {role: make_staff(role) for role in ROLES}
    checked = 0
    for path, method in operations(client):
        view = app.view_functions[_endpoint(app, path, method)]
        allowed = getattr(view, "clarity_roles", None)
        if allowed is None:
            continue
        for role in set(ROLES) - allowed:
            request_id = uuid.uuid4().hex
            response, body = call(client, path, method, {**staff[role].headers, "X-Request-ID": request_id})
            assert response.status_code == 403, (method, path, role, response.get_json())
            assert not body.was_read, (method, path, role)
            denial = conn.execute("SELECT action, event_type, outcome, actor_id FROM audit_events "
                                  "WHERE request_id = %s", (request_id,)).fetchall()
            assert [d[1:] for d in denial] == [("access.denied", "denied", staff[role].id)], (method, path)
            checked += 1
    assert checked >= 40  # auditors are refused every PHI route, providers the admin ones


def test_an_anonymous_request_never_reaches_content_type_checks(client):
    response = client.post("/api/v1/patients", data="<xml/>", content_type="application/xml")
    assert response.status_code == 401


def test_sign_in_and_health_need_no_token(client):
    assert client.get("/health/live").status_code == 200
    assert client.post("/api/v1/auth/tokens", json={"email": "nobody@clarity.test",
                                                    "password": "wrong password!"}).status_code == 401
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_an_unknown_route_is_404_and_a_wrong_method_405_even_anonymous(client):
    assert client.get("/api/v1/nothing-here").status_code == 404
    assert client.put("/api/v1/patients").status_code == 405


def _endpoint(app, path, method) -> str:
    adapter = app.url_map.bind("localhost")
    endpoint, _ = adapter.match(concrete(path), method=method.upper())
    return endpoint
