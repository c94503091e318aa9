"""No audit row, no PHI: when the audit trail cannot be written, PHI requests fail with 503."""
import psycopg
import pytest

from clarity import create_app
from clarity.security.access import new_token
from tests.conftest import make_settings, patient_body

ROUTES = "/api/v1/patients"


@pytest.fixture
def app_without_audit_grant(server, fresh_database, keyring):
    """An app on its own database, a provider with a patient, then INSERT on audit_events revoked."""
    app = create_app(make_settings(server, fresh_database), keyring=keyring)
    client = app.test_client()
    db = app.extensions["clarity"].db

    def add_provider(uow):
        user = uow.users.add(email="fail.closed@clarity.test", display_name="P", role="provider",
                             password_hash=app.extensions["clarity"].passwords.hash("x" * 12))
        token, digest = new_token()
        uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=600, client_addr=None)
        return token

    headers = {"Authorization": f"Bearer {db.run(add_provider)}"}
    patient = client.post(ROUTES, json=patient_body(), headers=headers).get_json()
    owner = psycopg.connect(server.url(fresh_database), autocommit=True)
    owner.execute("REVOKE INSERT ON audit_events FROM clarity_app")
    yield client, headers, patient, owner
    owner.execute("GRANT INSERT ON audit_events TO clarity_app")
    owner.close()
    db.close()


def count(owner, table):
    return owner.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_a_read_fails_with_503_and_returns_no_phi_when_the_audit_insert_fails(app_without_audit_grant):
    client, headers, patient, owner = app_without_audit_grant
    response = client.get(f"{ROUTES}/{patient['id']}", headers=headers)
    assert response.status_code == 503 and response.headers["Retry-After"]
    body = response.get_data(as_text=True)
    assert patient["last_name"] not in body and patient["mrn"] not in body


def test_a_write_fails_with_503_and_changes_nothing_when_the_audit_insert_fails(app_without_audit_grant):
    client, headers, patient, owner = app_without_audit_grant
    before = count(owner, "patients")
    assert client.post(ROUTES, json=patient_body(), headers=headers).status_code == 503
    patch = client.patch(f"{ROUTES}/{patient['id']}", json={"last_name": "Changed"},
                         headers={**headers, "If-Match": '"1"'})
    assert patch.status_code == 503
    assert count(owner, "patients") == before
    assert owner.execute("SELECT version FROM patients WHERE id = %s", (patient["id"],)).fetchone()[0] == 1


def test_a_denied_request_is_503_too_when_its_audit_event_cannot_be_written(app_without_audit_grant):
    client, headers, patient, owner = app_without_audit_grant
    assert client.get(f"{ROUTES}/00000000-0000-0000-0000-000000000000", headers=headers).status_code == 503
