"""Document content in the database: only ciphertext at rest; a chunk altered, moved, swapped with
another document's, dropped or added is found and never returned; row-level security on both
tables; data-key rotation re-enciphers documents, resumably, reporting what it cannot open."""
from __future__ import annotations

import logging
import os
import uuid
from urllib.parse import quote

import psycopg
import pytest
from psycopg import errors as pg
from werkzeug.test import EnvironBuilder

from clarity import create_app
from clarity.config import decode_key
from clarity.security.access import new_token
from clarity.security.chunks import CHUNK_BYTES
from clarity.security.crypto import Keyring, generate_key
from clarity.services import keys as rotation
from clarity.services.documents import DownloadCut
from tests.conftest import checked, make_settings, patient_body

API = "/api/v1"
CANARY = "CANARY-7c1f-PHI"
SIZE = 3 * CHUNK_BYTES + 500  # four chunks, the last one short


def content_with_canary(size=SIZE) -> bytes:
    """A PDF whose every chunk holds the canary, among random bytes."""
    data = bytearray(b"%PDF-1.7\n" + os.urandom(size))
    for offset in range(100, size, CHUNK_BYTES // 2):
        data[offset:offset + len(CANARY)] = CANARY.encode()
    return bytes(data[:size])


def upload(client, headers, patient_id, data, filename=f"{CANARY}.pdf", title=CANARY):
    response = client.post(f"{API}/patients/{patient_id}/documents", data=data, content_type="application/pdf",
                           headers={**headers, "Document-Title": quote(title),
                                    "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def act_as(conn, actor_id, role):
    conn.execute("SELECT set_config('clarity.actor_id', %s, true), set_config('clarity.actor_role', %s, true)",
                 (str(actor_id) if actor_id else "", role or ""))


# --- at rest -------------------------------------------------------------------------------------

def test_a_raw_select_of_the_chunks_and_the_metadata_row_shows_no_canary(client, conn, provider, create_patient):
    patient = create_patient(provider)
    data = content_with_canary()
    document = upload(client, provider.headers, patient["id"], data)
    act_as(conn, None, "admin")
    chunks = conn.execute("SELECT index, final, sealed, c::text FROM document_chunks c WHERE document_id = %s "
                          "ORDER BY index", (document["id"],)).fetchall()
    row = conn.execute("SELECT meta, d::text FROM documents d WHERE id = %s", (document["id"],)).fetchone()
    assert [(c[0], c[1]) for c in chunks] == [(0, False), (1, False), (2, False), (3, True)]
    assert CANARY.encode() in data and CANARY in document["title"]
    for sealed, text in [(c[2], c[3]) for c in chunks] + [row]:
        assert CANARY.encode() not in bytes(sealed) and CANARY not in text
        assert CANARY.encode().hex() not in text and document["sha256"] not in text
    assert all(len(c[2]) == 12 + CHUNK_BYTES + 16 for c in chunks[:3]) and len(chunks[3][2]) == 12 + 500 + 16


# --- tampering, on a database of its own (the owner alters rows) -------------------------------------

@pytest.fixture
def stack(server, fresh_database, keyring):
    """An app on its own database, a provider with a patient and two documents (A, B), and the
    owner's connection (a superuser: no row-level security) to alter rows."""
    app = checked(create_app(make_settings(server, fresh_database), keyring=keyring))
    db = app.extensions["clarity"].db

    def add_provider(uow):
        user = uow.users.add(email="documents@clarity.test", display_name="P", role="provider", password_hash="x")
        token, digest = new_token()
        uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=600, client_addr=None)
        return {"Authorization": f"Bearer {token}"}

    client, headers = app.test_client(), db.run(add_provider)
    patient = client.post(f"{API}/patients", json=patient_body(), headers=headers).get_json()
    data = {name: content_with_canary() for name in "AB"}
    ids = {name: upload(client, headers, patient["id"], data[name])["id"] for name in "AB"}
    owner = psycopg.connect(server.url(fresh_database), autocommit=True)
    stack = Stack(app, headers, owner, ids, data)
    stack.patient_id = patient["id"]
    yield stack
    owner.close()
    db.close()


class Stack:
    def __init__(self, app, headers, owner, ids, data):
        self.app, self.client, self.headers, self.owner, self.ids, self.data = (
            app, app.test_client(), headers, owner, ids, data)

    def sealed(self, name, index):
        return self.owner.execute("SELECT sealed FROM document_chunks WHERE document_id = %s AND index = %s",
                                  (self.ids[name], index)).fetchone()[0]

    def set_sealed(self, name, index, sealed):
        self.owner.execute("UPDATE document_chunks SET sealed = %s WHERE document_id = %s AND index = %s",
                           (sealed, self.ids[name], index))

    def start(self, name, started=None, **headers):
        """Call the app as a WSGI server does, up to the body it returns (not read yet)."""
        environ = EnvironBuilder(path=f"{API}/documents/{self.ids[name]}/content",
                                 headers={**self.headers, **headers}).get_environ()
        started = {} if started is None else started
        return self.app(environ, lambda status, response_headers, exc_info=None: started.update(
            status=int(status.split()[0]), headers=dict(response_headers)))

    def download(self, name, **headers):
        """(status, declared length, the bytes received before the stream ended or was cut,
        whether it was cut)."""
        started = {}
        body = self.start(name, started, **headers)
        received, cut = bytearray(), False
        try:
            for piece in body:
                received += piece
        except DownloadCut:
            cut = True
        finally:
            body.close()
        return started["status"], int(started["headers"]["Content-Length"]), bytes(received), cut


def swap_chunk_between_documents(s):
    s.set_sealed("A", 1, s.sealed("B", 1))


def reorder(s):
    first, second = s.sealed("A", 0), s.sealed("A", 1)
    s.set_sealed("A", 0, second)
    s.set_sealed("A", 1, first)


def drop_final_chunk(s):
    s.owner.execute("DELETE FROM document_chunks WHERE document_id = %s AND index = 3", (s.ids["A"],))


def add_a_chunk_after_the_final_one(s):
    s.owner.execute("INSERT INTO document_chunks (document_id, index, final, sealed) VALUES (%s, 4, true, %s)",
                    (s.ids["A"], s.sealed("A", 3)))


def move_the_final_flag(s):
    s.owner.execute("UPDATE document_chunks SET final = NOT final WHERE document_id = %s AND index IN (2, 3)",
                    (s.ids["A"],))


def flip_a_bit(s):
    sealed = bytearray(s.sealed("A", 2))
    sealed[5000] ^= 0x04
    s.set_sealed("A", 2, bytes(sealed))


def shrink_the_declared_size(s):
    s.owner.execute("UPDATE documents SET size_bytes = %s WHERE id = %s", (3 * CHUNK_BYTES, s.ids["A"]))


# (alteration, how many bytes may be sent before the stream is cut: the intact chunks before it)
ALTERATIONS = {
    "swapped with another document's chunk": (swap_chunk_between_documents, CHUNK_BYTES),
    "reordered": (reorder, 0),
    "final chunk dropped": (drop_final_chunk, 3 * CHUNK_BYTES),
    "chunk added after the final one": (add_a_chunk_after_the_final_one, 3 * CHUNK_BYTES),
    "final flag moved": (move_the_final_flag, 2 * CHUNK_BYTES),
    "bit flipped": (flip_a_bit, 2 * CHUNK_BYTES),
}


@pytest.mark.parametrize("name", list(ALTERATIONS))
def test_an_altered_document_is_cut_short_and_never_returns_an_altered_byte(stack, caplog, name):
    alter, intact = ALTERATIONS[name]
    alter(stack)
    with caplog.at_level(logging.ERROR, logger="clarity.services.documents"):
        status, length, received, cut = stack.download("A")
    assert status == 200 and length == SIZE and cut
    assert len(received) == intact and received == stack.data["A"][:intact]
    assert "download was cut" in caplog.text and CANARY not in caplog.text
    assert stack.download("B")[2] == stack.data["B"]


def test_a_declared_size_that_does_not_fit_the_chunks_is_cut_too(stack):
    shrink_the_declared_size(stack)
    status, length, received, cut = stack.download("A")
    assert cut and length == 3 * CHUNK_BYTES and received == stack.data["A"][:len(received)]
    assert len(received) < length


def test_a_range_opens_only_the_chunks_it_covers(stack):
    flip_a_bit(stack)  # chunk 2
    status, _, received, cut = stack.download("A", Range="bytes=10-99")
    assert (status, received, cut) == (206, stack.data["A"][10:100], False)
    status, _, received, cut = stack.download("A", Range=f"bytes={CHUNK_BYTES - 5}-{2 * CHUNK_BYTES + 5}")
    assert status == 206 and cut and received == stack.data["A"][CHUNK_BYTES - 5:2 * CHUNK_BYTES]


def test_the_download_is_audited_and_committed_before_its_first_byte_is_read(stack):
    body = stack.start("A", **{"X-Request-ID": "download-audit-first"})
    try:
        assert stack.owner.execute("SELECT event_type, fields FROM audit_events WHERE request_id = %s",
                                   ("download-audit-first",)).fetchall() == [("document.download", ["content"])]
        assert b"".join(body) == stack.data["A"]
    finally:
        body.close()


def test_the_content_is_read_in_the_actors_context_so_row_level_security_still_applies(stack):
    body = stack.start("A")
    other = stack.owner.execute("INSERT INTO users (email, display_name, role, password_hash) "
                                "VALUES ('elsewhere@clarity.test', 'E', 'provider', 'x') RETURNING id").fetchone()[0]
    stack.owner.execute("UPDATE patients SET provider_id = %s WHERE id = %s", (other, stack.patient_id))
    try:
        with pytest.raises(DownloadCut):
            next(iter(body))
    finally:
        body.close()


def test_a_metadata_envelope_moved_to_another_document_fails_without_showing_either(stack):
    meta = stack.owner.execute("SELECT meta FROM documents WHERE id = %s", (stack.ids["B"],)).fetchone()[0]
    stack.owner.execute("UPDATE documents SET meta = %s WHERE id = %s", (meta, stack.ids["A"]))
    response = stack.client.get(f"{API}/documents/{stack.ids['A']}", headers=stack.headers)
    assert response.status_code == 500 and CANARY not in response.get_data(as_text=True)


# --- row-level security ------------------------------------------------------------------------------

@pytest.fixture
def two_practices(client, make_staff, create_patient):
    """Providers A and B, each with a patient holding one document."""
    practices = {}
    for name in "AB":
        staff = make_staff("provider")
        patient = create_patient(staff)
        practices[name] = (staff, upload(client, staff.headers, patient["id"], b"%PDF-" + os.urandom(100)))
    return practices


def test_an_unscoped_select_of_documents_and_chunks_sees_only_the_actors_patients(conn, two_practices, make_staff):
    (a, doc_a), (b, doc_b) = two_practices["A"], two_practices["B"]
    for staff, mine in ((a, doc_a), (b, doc_b)):
        act_as(conn, staff.id, "provider")
        assert [str(r[0]) for r in conn.execute("SELECT id FROM documents")] == [mine["id"]]
        assert [str(r[0]) for r in conn.execute("SELECT DISTINCT document_id FROM document_chunks")] == [mine["id"]]
    act_as(conn, make_staff("auditor").id, "auditor")
    assert conn.execute("SELECT count(*) FROM documents").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM document_chunks").fetchone()[0] == 0
    act_as(conn, None, None)
    assert conn.execute("SELECT count(*) FROM document_chunks").fetchone()[0] == 0


def test_a_provider_cannot_add_alter_or_remove_another_documents_chunks(conn, two_practices):
    (a, doc_a), (b, _) = two_practices["A"], two_practices["B"]
    act_as(conn, b.id, "provider")
    with pytest.raises(pg.InsufficientPrivilege), conn.transaction():
        conn.execute("INSERT INTO document_chunks (document_id, index, final, sealed) VALUES (%s, 9, true, %s)",
                     (doc_a["id"], b"\x00" * 40))
    act_as(conn, a.id, "provider")  # even the author: chunks change only by rotation, go only with deletion
    assert conn.execute("UPDATE document_chunks SET sealed = sealed WHERE document_id = %s",
                        (doc_a["id"],)).rowcount == 0
    assert conn.execute("DELETE FROM document_chunks WHERE document_id = %s", (doc_a["id"],)).rowcount == 0
    with pytest.raises(pg.InsufficientPrivilege), conn.transaction():
        conn.execute("UPDATE document_chunks SET index = 5 WHERE document_id = %s", (doc_a["id"],))


# --- data-key rotation -----------------------------------------------------------------------------------

OLD, NEW = generate_key(), generate_key()


@pytest.fixture
def rotation_setup(server, test_database, conn, keys):
    """Documents written under k1 (a live one of several chunks, a short one, a deleted one) in the
    test's transaction, and apps under k1 only, under k1 and k2 (k2 active), and under k2 only."""
    blind = decode_key(keys["blind"], "b")
    rings = {"old": Keyring({"k1": decode_key(OLD, "k1")}, "k1", blind),
             "both": Keyring({"k1": decode_key(OLD, "k1"), "k2": decode_key(NEW, "k2")}, "k2", blind),
             "new": Keyring({"k2": decode_key(NEW, "k2")}, "k2", blind)}
    apps = {name: checked(create_app(make_settings(server, test_database), keyring=ring))
            for name, ring in rings.items()}
    for app in apps.values():
        app.extensions["clarity"].db.use_connection(conn)
    old = apps["old"].extensions["clarity"].db

    def add_provider(uow):
        user = uow.users.add(email=f"rot-{uuid.uuid4().hex[:6]}@clarity.test", display_name="R", role="provider",
                             password_hash="x")
        token, digest = new_token()
        uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=600, client_addr=None)
        return {"Authorization": f"Bearer {token}"}

    headers, client = old.run(add_provider), apps["old"].test_client()
    patient = client.post(f"{API}/patients", json=patient_body(), headers=headers).get_json()
    data = {"long": content_with_canary(), "short": b"%PDF-short", "deleted": b"%PDF-deleted"}
    ids = {name: upload(client, headers, patient["id"], content)["id"] for name, content in data.items()}
    assert client.delete(f"{API}/documents/{ids['deleted']}", headers={**headers, "If-Match": '"1"'}).status_code == 204
    yield apps, headers, ids, data
    for app in apps.values():
        app.extensions["clarity"].db.use_connection(None)


def stored(conn):
    act_as(conn, None, "admin")
    return {str(r[0]): (r[1], r[2]) for r in conn.execute(
        "SELECT d.id, d.key_id, (SELECT array_agg(sealed ORDER BY index) FROM document_chunks c "
        "WHERE c.document_id = d.id) FROM documents d")}


def test_rotation_re_enciphers_every_document_and_its_chunks_keeping_content_and_versions(conn, rotation_setup):
    apps, headers, ids, data = rotation_setup
    before = stored(conn)
    report = rotation.rotate_data_keys(apps["both"].extensions["clarity"].db, batch_size=50)
    assert (report.done, report.failed, report.remaining) == (4, set(), 0)  # the patient and three documents
    after = stored(conn)
    assert {key_id for key_id, _ in after.values()} == {"k2"}
    assert all(a != b for a, b in zip(after[ids["long"]][1], before[ids["long"]][1]))
    client = apps["new"].test_client()
    for name in ("long", "short"):
        response = client.get(f"{API}/documents/{ids[name]}/content", headers=headers)
        assert response.get_data() == data[name]
        assert client.get(f"{API}/documents/{ids[name]}", headers=headers).get_json()["version"] == 1
    assert client.get(f"{API}/documents/{ids['deleted']}", headers=headers).status_code == 404
    assert conn.execute("SELECT count(*) FROM audit_events WHERE event_type = 'document.reencrypt' "
                        "AND entity_id = ANY(%s)", (list(ids.values()),)).fetchone()[0] == 3
    assert rotation.rotate_data_keys(apps["both"].extensions["clarity"].db).done == 0


def test_rotation_stopped_after_any_unit_resumes_one_document_at_a_time(conn, rotation_setup):
    apps, _, _, _ = rotation_setup
    db, remaining = apps["both"].extensions["clarity"].db, []
    while not remaining or remaining[-1]:
        # Four units: once the patient is done, one each for patients, emergency-access reasons
        # and records (none left), and one document.
        remaining.append(rotation.rotate_data_keys(db, max_batches=4).remaining)
        assert len(remaining) < 10
    assert remaining == [3, 2, 1, 0]
    assert {key_id for key_id, _ in stored(conn).values()} == {"k2"}


def test_a_document_that_does_not_open_is_reported_and_left_as_it_was_while_the_others_rotate(conn,
                                                                                            rotation_setup):
    apps, _, ids, _ = rotation_setup
    act_as(conn, None, "admin")
    conn.execute("UPDATE document_chunks SET sealed = overlay(sealed placing '\\x00'::bytea from 40) "
                 "WHERE document_id = %s AND index = 2", (ids["long"],))
    before = stored(conn)
    report = rotation.rotate_data_keys(apps["both"].extensions["clarity"].db)
    assert report.failed == {uuid.UUID(ids["long"])} and report.remaining == 1
    after = stored(conn)
    assert after[ids["long"]] == before[ids["long"]]
    assert after[ids["short"]][0] == after[ids["deleted"]][0] == "k2"


def test_documents_under_a_key_no_longer_configured_are_reported_not_lost(conn, rotation_setup):
    apps, _, ids, _ = rotation_setup
    report = rotation.rotate_data_keys(apps["new"].extensions["clarity"].db)
    assert set(map(str, report.failed)) >= set(ids.values()) and report.done == 0
    assert {key_id for key_id, _ in stored(conn).values()} == {"k1"}
