"""Backups that restore (issue 10): a full pgBackRest backup of a live cluster plus its archived
WAL, restored to a new data directory at a named restore point, hold exactly what was written up
to that point; the patients decrypt with the production keys, the audit chain verifies against a
head exported before the backup, and neither a dump of the restored database nor the backup
repository's files hold any PHI in the clear.

One scenario, played once for the module (tests/e2e/backups.py has the clusters and pgBackRest):
patient "Ada" (the canaries of test_no_phi_leaks, and a medical record) is written and sealed,
a head is exported, the full backup taken; then patient "before" is written, sealed, a head
exported and a restore point made; then patient "after" and a last head. The restore stops at
the restore point and is promoted on another port, beside the still-running primary.
"""
from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

from clarity import create_app, localpg
from clarity.security.access import new_token
from tests.conftest import APP_ROLE, checked, make_settings, migrate, patient_body
from tests.e2e import backups
from tests.e2e.test_no_phi_leaks import CANARIES

pytestmark = pytest.mark.slow

DATABASE = "clarity"
RESTORE_POINT = "before-the-late-writes"
RECORD_CANARY = "canary record body: zebrafever biopsy positive"
BEFORE_NAME, AFTER_NAME = "Canarybeforepoint", "Canaryafterpoint"
PHI = [*CANARIES.values(), RECORD_CANARY, BEFORE_NAME, AFTER_NAME]


@dataclasses.dataclass
class Scenario:
    home: Path
    backrest: backups.PgBackRest
    restored: backups.ScratchCluster
    app: object  # on the restored cluster
    token: str
    provider_email: str
    patients: dict[str, dict]  # "ada", "before", "after": the API's responses on the primary
    record_id: str
    heads: dict[str, str]  # "before_backup", "at_restore_point", "after_restore_point"

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def scenario(keyring):
    with contextlib.ExitStack() as stack:
        home = stack.enter_context(backups.private_directory())
        primary = backups.ScratchCluster(home / "primary", home)
        backrest = backups.PgBackRest(home, primary)
        primary.initdb()
        stack.callback(primary.stop)
        primary.start({"wal_level": "replica", "archive_mode": "on", "archive_command": backrest.archive_command})
        provision(primary)
        app = stack.enter_context(serving(primary, keyring))
        client = app.test_client()
        token, email = sign_up_provider(app)
        headers = {"Authorization": f"Bearer {token}"}

        ada = create_patient(client, headers, **CANARIES)
        record = client.post(f"/api/v1/patients/{ada['id']}/records", headers=headers,
                             json={"type": "note", "body": {"text": RECORD_CANARY}})
        assert record.status_code == 201, record.get_json()
        heads = {"before_backup": seal_and_export_head(app)}

        backrest.run("stanza-create")
        backrest.run("check")
        backrest.run("backup", "--type=full")

        before = create_patient(client, headers, first_name=BEFORE_NAME)
        heads["at_restore_point"] = seal_and_export_head(app)
        with psycopg.connect(primary.url(DATABASE), autocommit=True) as owner:
            owner.execute("SELECT pg_create_restore_point(%s)", (RESTORE_POINT,))
        after = create_patient(client, headers, first_name=AFTER_NAME)
        heads["after_restore_point"] = seal_and_export_head(app)
        backrest.run("check")  # switches to a new WAL segment and waits until the last one is archived

        restored = backups.ScratchCluster(backups.owned_directory(home / "restored"), home)
        backrest.run("restore", "--type=name", f"--target={RESTORE_POINT}", "--target-action=promote",
                     f"--pg1-path={restored.data}")
        stack.callback(restored.stop)
        # A copy must not archive into the primary's stanza (in production its restored
        # postgresql.conf says to).
        restored.start({"archive_mode": "off"})
        restored.wait_until(lambda conn: not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0],
                            timeout=30, what="reach the restore point and promote")
        restored_app = stack.enter_context(serving(restored, keyring))
        yield Scenario(home, backrest, restored, restored_app, token, email,
                       {"ada": ada, "before": before, "after": after}, record.get_json()["id"], heads)


def provision(cluster: backups.ScratchCluster) -> None:
    """The database, migrated, and the app's login role, as tests/conftest.py's server has."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
    migrate(cluster.url(DATABASE))
    with psycopg.connect(cluster.url(DATABASE), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN IN ROLE clarity_app")


@contextlib.contextmanager
def serving(cluster: backups.ScratchCluster, keyring):
    """An app with real pools on ``cluster``'s database and the session's keys; pools closed after."""
    app = checked(create_app(make_settings(cluster, DATABASE), keyring=keyring))
    try:
        yield app
    finally:
        app.extensions["clarity"].db.close()


def sign_up_provider(app) -> tuple[str, str]:
    """A provider with a live token, committed: (token, email)."""
    email = f"provider-{uuid.uuid4().hex[:8]}@clarity.test"
    password_hash = app.extensions["clarity"].passwords.hash("correct horse battery")

    def work(uow):
        user = uow.users.add(email=email, display_name="Backup provider", role="provider", password_hash=password_hash)
        token, digest = new_token()
        uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=3600, client_addr=None)
        return token

    return app.extensions["clarity"].db.run(work), email


def create_patient(client, headers, **overrides) -> dict:
    response = client.post("/api/v1/patients", json=patient_body(**overrides), headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def audit_cli(app, *args):
    return app.test_cli_runner().invoke(args=["audit", *args])


def seal_and_export_head(app) -> str:
    """Seal every committed event; the chain head `audit head` prints."""
    assert audit_cli(app, "seal").exit_code == 0
    result = audit_cli(app, "head")
    assert result.exit_code == 0, result.output
    return result.output


def patient_ids(cluster: backups.ScratchCluster) -> set[str]:
    with psycopg.connect(cluster.url(DATABASE), autocommit=True) as owner:
        return {str(row[0]) for row in owner.execute("SELECT id FROM patients")}


def test_the_restore_holds_the_writes_up_to_the_restore_point_and_none_after(scenario):
    ada, before, after = (scenario.patients[name]["id"] for name in ("ada", "before", "after"))

    assert patient_ids(scenario.restored) == {ada, before}
    with psycopg.connect(scenario.restored.url(DATABASE), autocommit=True) as owner:
        audited = {row[0] for row in owner.execute("SELECT entity_id FROM audit_events WHERE event_type = "
                                                   "'patient.create'")}
    assert audited == {ada, before}
    assert scenario.app.test_client().get(f"/api/v1/patients/{after}", headers=scenario.headers).status_code == 404


def test_patients_decrypt_and_are_found_by_mrn_with_the_production_keys(scenario):
    client = scenario.app.test_client()

    ada = client.get(f"/api/v1/patients/{scenario.patients['ada']['id']}", headers=scenario.headers)
    found = client.post("/api/v1/patients/search", json={"mrn": CANARIES["mrn"]}, headers=scenario.headers)
    record = client.get(f"/api/v1/records/{scenario.record_id}", headers=scenario.headers)

    assert ada.status_code == 200 and ada.get_json() == scenario.patients["ada"]
    assert [p["id"] for p in found.get_json()["items"]] == [scenario.patients["ada"]["id"]]
    assert record.status_code == 200 and record.get_json()["body"] == {"text": RECORD_CANARY}


def test_the_audit_chain_verifies_against_heads_exported_up_to_the_restore_point(scenario):
    for head in ("before_backup", "at_restore_point"):
        result = audit_cli(scenario.app, "verify", "--head", scenario.heads[head])
        assert result.exit_code == 0 and result.output.startswith("OK: "), (head, result.output)

    later = audit_cli(scenario.app, "verify", "--head", scenario.heads["after_restore_point"])

    # What a restore to an earlier point looks like against a head exported after it.
    assert later.exit_code == 1 and later.output.startswith("FAIL head_mismatch: the chain ends at seq ")
    assert "seals were removed" in later.output


def test_neither_a_dump_of_the_restored_database_nor_the_backup_repository_holds_plaintext_phi(scenario):
    dump = subprocess.run([str(localpg.bindir() / "pg_dump"), "--dbname", scenario.restored.url(DATABASE)],
                          check=True, capture_output=True, timeout=60).stdout.lower()
    in_repository = backups.files_holding(scenario.backrest.repo, [*PHI, scenario.provider_email])

    # The searches read plain bytes: what is stored in the clear is found.
    assert scenario.patients["ada"]["id"].encode() in dump and scenario.provider_email.encode() in dump
    assert any(scenario.provider_email in hits for hits in in_repository.values())
    assert any(path.startswith("backup/") for path in in_repository)
    assert any(path.startswith("archive/") for path in in_repository)
    assert [needle for needle in PHI if needle.lower().encode() in dump] == []
    assert {path: hits for path, hits in in_repository.items() if hits != [scenario.provider_email]} == {}
