"""Patient documents through the API: raw-body uploads checked against their declared type,
streamed downloads with ranges and validators, metadata, lists, soft delete, scoping, audit."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import uuid
from urllib.parse import quote, unquote

import pytest

from clarity.api.documents import content_disposition
from clarity.config import ConfigError, from_env
from clarity.security.chunks import CHUNK_BYTES
from clarity.services.documents import SIGNATURES

API = "/api/v1"
MiB = 1024 * 1024
PDF = b"%PDF-1.7\n" + b"1 0 obj << /Type /Catalog >> endobj\n" * 40 + b"%%EOF\n"
SAMPLES = {
    "application/pdf": PDF,
    "image/png": b"\x89PNG\r\n\x1a\n" + os.urandom(300),
    "image/jpeg": b"\xff\xd8\xff\xe0" + os.urandom(300),
    "image/tiff": b"II*\x00" + os.urandom(300),
    "application/dicom": b"\x00" * 128 + b"DICM" + os.urandom(300),
    "text/plain": "Consent given by the patient, Zoë Ñúñez.\n".encode(),
}
MISMATCHES = {
    "application/pdf": SAMPLES["image/png"],
    "image/png": PDF,
    "image/jpeg": b"\xff\xd8" + b"\x00" * 50,
    "image/tiff": b"II+\x00" + b"\x00" * 50,
    "application/dicom": b"\x00" * 127 + b"DICM" + b"\x00" * 50,
    "text/plain": b"Consent\x00given",
}


@pytest.fixture
def patient(provider, create_patient):
    return create_patient(provider)


def upload(client, staff, patient_id, data=PDF, content_type="application/pdf", filename="scan.pdf", title=None,
           **headers):
    headers = {**staff.headers, **headers}
    if filename is not None:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"
    if title is not None:
        headers["Document-Title"] = quote(title, safe="")
    return client.post(f"{API}/patients/{patient_id}/documents", data=data, content_type=content_type,
                       headers=headers)


@pytest.fixture
def uploaded(client, provider, patient):
    """Upload as the patient's provider and return the response JSON (asserting 201)."""
    def make(data=PDF, content_type="application/pdf", **kwargs):
        response = upload(client, provider, patient["id"], data, content_type, **kwargs)
        assert response.status_code == 201, response.get_json()
        return response.get_json()
    return make


def content(client, staff, document_id, **headers):
    return client.get(f"{API}/documents/{document_id}/content", headers={**staff.headers, **headers})


def stored_documents(conn) -> int:
    conn.execute("SELECT set_config('clarity.actor_role', 'admin', true)")
    return conn.execute("SELECT count(*) FROM documents").fetchone()[0]


def assert_problem(response, status):
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/problem+json"
    return response.get_json()


# --- upload and download ---------------------------------------------------------------------

def test_an_upload_answers_201_with_location_etag_and_its_metadata(client, provider, patient):
    response = upload(client, provider, patient["id"], title="Consent form")
    assert response.status_code == 201
    document = response.get_json()
    assert response.headers["Location"] == f"{API}/documents/{document['id']}"
    assert response.headers["ETag"] == '"1"' and response.headers["Cache-Control"] == "no-store"
    assert {k: document[k] for k in ("patient_id", "title", "filename", "content_type", "size_bytes", "sha256",
                                     "author_id", "version")} == {
        "patient_id": patient["id"], "title": "Consent form", "filename": "scan.pdf",
        "content_type": "application/pdf", "size_bytes": len(PDF), "sha256": hashlib.sha256(PDF).hexdigest(),
        "author_id": str(provider.id), "version": 1}


def test_a_download_is_the_file_as_an_attachment_with_its_type_tag_and_length(client, provider, uploaded):
    document = uploaded(filename="Einverständnis – Müller.pdf")
    response = content(client, provider, document["id"])
    assert response.status_code == 200 and response.get_data() == PDF
    headers = response.headers
    assert headers["Content-Type"] == "application/pdf"
    assert headers["ETag"] == f'"{hashlib.sha256(PDF).hexdigest()}"'
    assert headers["Content-Length"] == str(len(PDF))
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    assert headers["Accept-Ranges"] == "bytes"
    disposition = headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="Einverstandnis _ Muller.pdf"; ')
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == "Einverständnis – Müller.pdf"


def test_a_text_document_is_served_as_utf8(client, provider, uploaded):
    document = uploaded(SAMPLES["text/plain"], "text/plain; charset=utf-8", filename="note.txt")
    assert document["content_type"] == "text/plain"
    response = content(client, provider, document["id"])
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.get_data() == SAMPLES["text/plain"]


def test_a_file_name_and_title_in_any_script_round_trip_through_their_headers(client, provider, uploaded):
    document = uploaded(filename="同意书 (2).pdf", title="Consentement éclairé — 患者")
    read = client.get(f"{API}/documents/{document['id']}", headers=provider.headers).get_json()
    assert (read["filename"], read["title"]) == ("同意书 (2).pdf", "Consentement éclairé — 患者")


def test_a_plain_ascii_filename_parameter_is_read_too(client, provider, patient):
    response = upload(client, provider, patient["id"], filename=None,
                      **{"Content-Disposition": 'attachment; filename="scan \\"A\\".pdf"'})
    assert response.status_code == 201 and response.get_json()["filename"] == 'scan "A".pdf'


def test_filename_star_wins_over_filename(client, provider, patient):
    response = upload(client, provider, patient["id"], filename=None, **{
        "Content-Disposition": "attachment; filename=\"fallback.pdf\"; filename*=UTF-8''r%C3%A9el.pdf"})
    assert response.get_json()["filename"] == "réel.pdf"


def test_name_and_title_are_optional(client, provider, uploaded):
    document = uploaded(filename=None)
    assert (document["filename"], document["title"]) == (None, None)
    assert content(client, provider, document["id"]).headers["Content-Disposition"] == "attachment"


def test_an_empty_text_document_round_trips(client, provider, uploaded):
    document = uploaded(b"", "text/plain")
    assert document["size_bytes"] == 0
    response = content(client, provider, document["id"])
    assert response.status_code == 200 and response.get_data() == b"" and response.headers["Content-Length"] == "0"


@pytest.mark.parametrize("size", [CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 5 * CHUNK_BYTES + 3])
def test_sizes_around_the_chunk_boundaries_round_trip(client, provider, uploaded, size):
    data = (PDF + os.urandom(size))[:size]
    document = uploaded(data)
    assert content(client, provider, document["id"]).get_data() == data


def test_a_25_mib_upload_passes_the_apps_4_mib_bound_and_round_trips_byte_exact(client, provider, uploaded):
    data = b"%PDF-1.7\n" + os.urandom(25 * MiB - 9)
    document = uploaded(data)
    assert document["size_bytes"] == 25 * MiB and document["sha256"] == hashlib.sha256(data).hexdigest()
    response = content(client, provider, document["id"])
    assert response.headers["Content-Length"] == str(25 * MiB)
    assert hashlib.sha256(response.get_data()).hexdigest() == document["sha256"]


def test_the_json_routes_keep_their_4_mib_bound(client, provider):
    response = client.post(f"{API}/patients", json={"notes": "x" * 5_000_000}, headers=provider.headers)
    assert_problem(response, 413)


# --- what is refused ---------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", sorted(SAMPLES))
def test_each_accepted_type_is_taken_when_its_first_bytes_are_of_it(uploaded, content_type):
    assert uploaded(SAMPLES[content_type], content_type)["content_type"] == content_type


@pytest.mark.parametrize("content_type", sorted(MISMATCHES))
def test_content_that_is_not_its_declared_type_is_415_and_nothing_is_stored(client, conn, provider, patient,
                                                                             content_type):
    response = upload(client, provider, patient["id"], MISMATCHES[content_type], content_type)
    assert "not " + content_type in assert_problem(response, 415)["detail"]
    assert stored_documents(conn) == 0


def test_text_cut_mid_character_at_the_end_of_a_full_first_block_is_still_text(uploaded):
    data = b"a" * (CHUNK_BYTES - 1) + "é".encode() + b"more"
    assert uploaded(data, "text/plain")["size_bytes"] == len(data)


def test_a_short_dicom_file_without_its_preamble_is_415(client, provider, patient):
    assert_problem(upload(client, provider, patient["id"], b"DICM", "application/dicom"), 415)


@pytest.mark.parametrize("content_type", ["application/zip", "application/json", "text/html",
                                          "application/octet-stream", "image/svg+xml", None])
def test_a_type_not_on_the_allow_list_is_415_before_the_body_is_read(client, provider, patient, content_type):
    stream = Stream(PDF)
    headers = {**provider.headers, **({"Content-Type": content_type} if content_type else {})}
    response = client.post(f"{API}/patients/{patient['id']}/documents", input_stream=stream,
                           content_length=len(PDF), headers=headers)
    assert_problem(response, 415)
    assert not stream.was_read


def test_the_allow_list_comes_from_the_environment(client, provider, patient, app, monkeypatch):
    monkeypatch.setattr(app.extensions["clarity"], "settings",
                        dataclasses.replace(app.extensions["clarity"].settings, document_types=("image/png",)))
    assert_problem(upload(client, provider, patient["id"]), 415)
    assert upload(client, provider, patient["id"], SAMPLES["image/png"], "image/png").status_code == 201


class Stream(io.BytesIO):
    """A request body that remembers how much anything read of it."""

    @property
    def was_read(self) -> bool:
        return self.tell() > 0


@pytest.fixture
def small_limit(app, monkeypatch):
    """CLARITY_DOCUMENT_MAX_BYTES of 3 chunks and a bit, for this test."""
    limit = 3 * CHUNK_BYTES + 100
    monkeypatch.setattr(app.extensions["clarity"], "settings",
                        dataclasses.replace(app.extensions["clarity"].settings, document_max_bytes=limit))
    return limit


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_read(client, provider, patient, small_limit):
    stream = Stream(PDF + b"x" * small_limit)
    response = client.post(f"{API}/patients/{patient['id']}/documents", input_stream=stream,
                           content_length=len(stream.getvalue()), content_type="application/pdf",
                           headers=provider.headers)
    assert_problem(response, 413)
    assert not stream.was_read


def test_a_stream_without_a_length_that_runs_over_is_413_and_nothing_is_stored(client, conn, provider, patient,
                                                                             small_limit):
    stream = Stream(PDF + b"x" * (10 * small_limit))
    response = client.post(f"{API}/patients/{patient['id']}/documents", input_stream=stream,
                           content_type="application/pdf", headers=provider.headers,
                           environ_overrides={"wsgi.input_terminated": True})
    assert_problem(response, 413)
    assert stream.tell() <= small_limit + 1
    assert stored_documents(conn) == 0


def test_a_stream_without_a_length_within_the_limit_is_stored(client, provider, patient, small_limit):
    data = PDF + b"x" * (small_limit - len(PDF))
    response = client.post(f"{API}/patients/{patient['id']}/documents", input_stream=io.BytesIO(data),
                           content_type="application/pdf", headers=provider.headers,
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 201 and response.get_json()["size_bytes"] == small_limit


def test_a_chunked_body_on_a_server_that_does_not_terminate_it_is_411(client, provider, patient):
    response = client.post(f"{API}/patients/{patient['id']}/documents", input_stream=io.BytesIO(PDF),
                           content_type="application/pdf",
                           headers={**provider.headers, "Transfer-Encoding": "chunked"})
    assert_problem(response, 411)


@pytest.mark.parametrize("disposition, status, field", [
    ("attachment; filename*=UTF-8''a%2Fb.pdf", 422, "filename"),
    ("attachment; filename*=UTF-8''..", 422, "filename"),
    ("attachment; filename*=UTF-8''a%0Ab.pdf", 422, "filename"),
    ("attachment; filename*=UTF-8''" + "a" * 256, 422, "filename"),
    ('attachment; filename="C:\\\\fakepath\\\\scan.pdf"', 422, "filename"),
    ("attachment; filename*=UTF-8''%FF.pdf", 400, "Content-Disposition"),
    ("attachment; filename*=ISO-8859-1''caf%E9.pdf", 400, "Content-Disposition"),
    ("attachment; filename*=UTF-8''%G1", 400, "Content-Disposition"),
    ("attachment; filename=a; filename=b", 400, "Content-Disposition"),
    ("attachment; filename=", 400, "Content-Disposition"),
    ('attachment; filename="unterminated', 400, "Content-Disposition"),
    ('attachment; filename="caf\xe9.pdf"', 400, "Content-Disposition"),
])
def test_a_bad_file_name_is_4xx_naming_it_and_nothing_is_stored(client, conn, provider, patient, disposition,
                                                                status, field):
    response = upload(client, provider, patient["id"], filename=None, **{"Content-Disposition": disposition})
    assert assert_problem(response, status)["field"] == field
    assert stored_documents(conn) == 0


@pytest.mark.parametrize("title, status", [
    ("%FF%FE", 400), ("50%", 400), ("caf\xe9", 400), ("a%0Ab", 422), ("%00", 422), ("x" * 201, 422), ("", 422),
])
def test_a_bad_title_is_4xx_and_nothing_is_stored(client, conn, provider, patient, title, status):
    response = upload(client, provider, patient["id"], **{"Document-Title": title})
    problem = assert_problem(response, status)
    assert problem["field"] in ("title", "Document-Title")
    assert title not in problem["detail"] or not title
    assert stored_documents(conn) == 0


def test_anonymous_uploads_are_401_before_a_byte_of_the_body_is_read(client, patient):
    stream = Stream(PDF)
    response = client.post(f"{API}/patients/{patient['id']}/documents", input_stream=stream, content_length=len(PDF),
                           content_type="application/pdf")
    assert_problem(response, 401)
    assert not stream.was_read


def test_auditors_get_403_on_every_document_route(client, make_staff, uploaded, patient):
    auditor, document = make_staff("auditor"), uploaded()
    for method, url in (("POST", f"{API}/patients/{patient['id']}/documents"),
                        ("GET", f"{API}/patients/{patient['id']}/documents"),
                        ("GET", f"{API}/documents/{document['id']}"),
                        ("GET", f"{API}/documents/{document['id']}/content"),
                        ("DELETE", f"{API}/documents/{document['id']}")):
        assert_problem(client.open(url, method=method, headers={**auditor.headers, "If-Match": '"1"'}), 403)


# --- ranges and validators ----------------------------------------------------------------------

@pytest.fixture
def large(uploaded):
    """A document of three chunks and a bit, and its content."""
    data = PDF + os.urandom(3 * CHUNK_BYTES + 1000 - len(PDF))
    return uploaded(data), data


@pytest.mark.parametrize("header, start, stop", [
    ("bytes=0-99", 0, 100),
    ("bytes=65530-65545", 65530, 65546),  # across a chunk boundary
    ("bytes=131072-", 131072, None),  # open: from a chunk's first byte to the end
    ("bytes=-100", -100, None),  # the last 100 bytes
    ("bytes=100-99999999", 100, None),  # an end past the content is cut to it
    ("bytes=0-0", 0, 1),
])
def test_one_byte_range_is_206_with_its_content_range(client, provider, large, header, start, stop):
    document, data = large
    response = content(client, provider, document["id"], Range=header)
    expected = data[start:stop] if stop is not None else data[start:]
    first = start if start >= 0 else len(data) + start
    assert response.status_code == 206 and response.get_data() == expected
    assert response.headers["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{len(data)}"
    assert response.headers["Content-Length"] == str(len(expected))
    assert response.headers["ETag"] == f'"{document["sha256"]}"'


@pytest.mark.parametrize("header", ["bytes=99999999-", f"bytes={3 * CHUNK_BYTES + 1000}-{4 * CHUNK_BYTES}"])
def test_a_range_starting_past_the_end_is_416_with_the_length(client, provider, large, header):
    document, data = large
    response = content(client, provider, document["id"], Range=header)
    assert_problem(response, 416)
    assert response.headers["Content-Range"] == f"bytes */{len(data)}"


def test_any_range_of_an_empty_document_is_416(client, provider, uploaded):
    document = uploaded(b"", "text/plain")
    assert content(client, provider, document["id"], Range="bytes=-5").status_code == 416


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "items=0-1", "bytes=5-2", "bytes=abc"])
def test_several_ranges_other_units_or_a_malformed_range_get_the_whole_content(client, provider, large, header):
    document, data = large
    response = content(client, provider, document["id"], Range=header)
    assert response.status_code == 200 and response.get_data() == data


def test_if_range_applies_the_range_only_while_the_tag_matches(client, provider, large):
    document, data = large
    tag = f'"{document["sha256"]}"'
    assert content(client, provider, document["id"], Range="bytes=0-9", **{"If-Range": tag}).status_code == 206
    for other in ('"0123"', f"W/{tag}", "Wed, 21 Oct 2015 07:28:00 GMT"):
        response = content(client, provider, document["id"], Range="bytes=0-9", **{"If-Range": other})
        assert response.status_code == 200 and response.get_data() == data, other


@pytest.mark.parametrize("template", ['"{}"', 'W/"{}"', '"other", "{}"', "*"])
def test_if_none_match_with_the_tag_is_304_without_content(client, provider, large, template):
    document, _ = large
    response = content(client, provider, document["id"], **{"If-None-Match": template.format(document["sha256"])})
    assert response.status_code == 304 and response.get_data() == b""
    assert response.headers["ETag"] == f'"{document["sha256"]}"'


def test_if_none_match_with_another_tag_gets_the_content(client, provider, large):
    document, data = large
    assert content(client, provider, document["id"], **{"If-None-Match": '"stale"'}).get_data() == data


def test_a_head_request_gets_the_headers_and_no_content(client, provider, large):
    document, data = large
    response = client.head(f"{API}/documents/{document['id']}/content", headers=provider.headers)
    assert response.status_code == 200 and response.get_data() == b""
    assert response.headers["Content-Length"] == str(len(data))


# --- metadata, lists, deletion ------------------------------------------------------------------

def test_the_metadata_carries_its_version_as_etag_and_never_the_content(client, provider, uploaded):
    document = uploaded(title="Scan")
    response = client.get(f"{API}/documents/{document['id']}", headers=provider.headers)
    assert response.status_code == 200 and response.headers["ETag"] == '"1"'
    assert response.get_json() == document


def test_a_list_is_newest_first_in_keyset_pages_without_content(client, provider, patient, uploaded):
    ids = [uploaded(title=f"Scan {n}")["id"] for n in range(5)]
    url = f"{API}/patients/{patient['id']}/documents?limit=2"
    seen = []
    while url:
        response = client.get(url, headers=provider.headers)
        assert response.status_code == 200
        page = response.get_json()
        assert all(set(item) == set(page[0]) and "content" not in item for item in page)
        seen += page
        link = response.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    created = [item["created_at"] for item in seen]
    assert sorted(item["id"] for item in seen) == sorted(ids) and created == sorted(created, reverse=True)
    assert len(seen) == 5 and {item["title"] for item in seen} == {f"Scan {n}" for n in range(5)}


def test_a_forged_cursor_is_400(client, provider, patient):
    assert_problem(client.get(f"{API}/patients/{patient['id']}/documents?cursor=bm90LWEtY3Vyc29y",
                              headers=provider.headers), 400)


def test_deleting_needs_if_match_and_refuses_a_stale_one(client, provider, uploaded):
    document = uploaded()
    url = f"{API}/documents/{document['id']}"
    assert_problem(client.delete(url, headers=provider.headers), 428)
    assert_problem(client.delete(url, headers={**provider.headers, "If-Match": '"2"'}), 412)
    assert_problem(client.delete(url, headers={**provider.headers, "If-Match": f'"{document["sha256"]}"'}), 412)
    assert client.get(url, headers=provider.headers).status_code == 200


def test_a_deleted_document_is_404_everywhere_its_content_purged_and_its_row_kept(client, conn, provider, patient,
                                                                                 uploaded):
    document, kept = uploaded(), uploaded()
    url = f"{API}/documents/{document['id']}"
    response = client.delete(url, headers={**provider.headers, "If-Match": '"1"'})
    assert response.status_code == 204
    assert_problem(client.get(url, headers=provider.headers), 404)
    assert_problem(content(client, provider, document["id"]), 404)
    assert_problem(client.delete(url, headers={**provider.headers, "If-Match": '"2"'}), 404)
    listed = client.get(f"{API}/patients/{patient['id']}/documents", headers=provider.headers).get_json()
    assert [item["id"] for item in listed] == [kept["id"]]
    conn.execute("SELECT set_config('clarity.actor_role', 'admin', true)")
    assert conn.execute("SELECT count(*) FROM document_chunks WHERE document_id = %s",
                        (document["id"],)).fetchone()[0] == 0
    row = conn.execute("SELECT deleted_by, version FROM documents WHERE id = %s", (document["id"],)).fetchone()
    assert row == (provider.id, 2)


# --- scope ----------------------------------------------------------------------------------------

def test_another_provider_gets_404_for_every_document_route_and_stores_nothing(client, conn, make_staff, patient,
                                                                             uploaded):
    other, document = make_staff("provider"), uploaded()
    assert_problem(upload(client, other, patient["id"]), 404)
    assert_problem(client.get(f"{API}/patients/{patient['id']}/documents", headers=other.headers), 404)
    assert_problem(client.get(f"{API}/documents/{document['id']}", headers=other.headers), 404)
    assert_problem(content(client, other, document["id"]), 404)
    assert_problem(content(client, other, document["id"], Range="bytes=0-1"), 404)
    assert_problem(client.delete(f"{API}/documents/{document['id']}",
                                 headers={**other.headers, "If-Match": '"1"'}), 404)
    assert stored_documents(conn) == 1


def test_an_unknown_document_or_patient_is_404(client, provider):
    assert_problem(upload(client, provider, uuid.uuid4()), 404)
    assert_problem(content(client, provider, uuid.uuid4()), 404)


def test_an_admin_reads_and_uploads_for_any_patient(client, admin, patient, uploaded):
    document = uploaded()
    assert content(client, admin, document["id"]).get_data() == PDF
    assert upload(client, admin, patient["id"]).get_json()["author_id"] == str(admin.id)


def test_the_documents_of_a_deleted_patient_are_404(client, provider, patient, uploaded):
    document = uploaded()
    version = client.get(f"{API}/patients/{patient['id']}", headers=provider.headers).headers["ETag"]
    assert client.delete(f"{API}/patients/{patient['id']}",
                         headers={**provider.headers, "If-Match": version}).status_code == 204
    assert_problem(content(client, provider, document["id"]), 404)
    assert_problem(upload(client, provider, patient["id"]), 404)


# --- audit ------------------------------------------------------------------------------------------

def events(conn, actor_id):
    return [row for row in conn.execute(
        "SELECT event_type, action, outcome, entity_id, patient_id::text, fields FROM audit_events "
        "WHERE actor_id = %s AND entity_type = 'document' ORDER BY id", (actor_id,))]


def test_every_access_is_audited_with_field_names_and_never_values(client, conn, provider, patient):
    created = upload(client, provider, patient["id"], filename="canary-name.pdf", title="canary-title").get_json()
    client.get(f"{API}/patients/{patient['id']}/documents", headers=provider.headers)
    client.get(f"{API}/documents/{created['id']}", headers=provider.headers)
    content(client, provider, created["id"], Range="bytes=0-1").get_data()
    content(client, provider, created["id"], **{"If-None-Match": f'"{created["sha256"]}"'})
    client.delete(f"{API}/documents/{created['id']}", headers={**provider.headers, "If-Match": '"1"'})
    doc, pid = created["id"], patient["id"]
    assert [(e[0], e[1], e[2], str(e[3]) if e[3] else None, e[4], e[5]) for e in events(conn, provider.id)] == [
        ("document.create", "C", "success", doc, pid, ["content", "filename", "title"]),
        ("document.list", "R", "success", None, pid, []),
        ("document.read", "R", "success", doc, pid, ["filename", "sha256", "title"]),
        ("document.read", "R", "success", doc, pid, ["filename", "sha256", "title"]),
        ("document.download", "R", "success", doc, pid, ["content"]),
        ("document.download", "R", "success", doc, pid, []),  # 304: nothing sent
        ("document.delete", "D", "success", doc, pid, []),
    ]
    text = str(conn.execute("SELECT array_agg(a::text) FROM audit_events a WHERE actor_id = %s",
                            (provider.id,)).fetchone()[0])
    assert "canary" not in text and created["sha256"] not in text


def test_refused_uploads_and_reads_out_of_scope_are_audited_as_failures_and_denials(client, conn, make_staff,
                                                                                  provider, patient, uploaded):
    upload(client, provider, patient["id"], MISMATCHES["application/pdf"])
    other = make_staff("provider")
    content(client, other, uploaded()["id"])
    assert [e[:3] for e in events(conn, provider.id)][0] == ("document.create", "C", "failure")
    assert [e[:3] for e in events(conn, other.id)] == [("document.download", "R", "denied")]


# --- configuration and helpers ----------------------------------------------------------------------

def test_the_limits_come_from_the_environment_and_only_checkable_types_are_accepted():
    settings = from_env({"CLARITY_DOCUMENT_MAX_BYTES": "1000", "CLARITY_DOCUMENT_TYPES": " Image/PNG ,text/plain"})
    assert (settings.document_max_bytes, settings.document_types) == (1000, ("image/png", "text/plain"))
    assert from_env({}).document_max_bytes == 25 * MiB
    assert set(from_env({}).document_types) == set(SIGNATURES)
    for bad in ({"CLARITY_DOCUMENT_TYPES": "application/zip"}, {"CLARITY_DOCUMENT_TYPES": ","},
                {"CLARITY_DOCUMENT_MAX_BYTES": "0"}, {"CLARITY_DOCUMENT_MAX_BYTES": "lots"}):
        with pytest.raises(ConfigError):
            from_env(bad)


@pytest.mark.parametrize("name, header", [
    (None, "attachment"),
    ("scan.pdf", "attachment; filename=\"scan.pdf\"; filename*=UTF-8''scan.pdf"),
    ('a "b" %c.pdf', "attachment; filename=\"a _b_ _c.pdf\"; filename*=UTF-8''a%20%22b%22%20%25c.pdf"),
    ("同意书", "attachment; filename=\"document\"; filename*=UTF-8''%E5%90%8C%E6%84%8F%E4%B9%A6"),
])
def test_the_download_names_the_file_as_rfc_6266_says(name, header):
    assert content_disposition(name) == header


def test_an_upload_retried_with_its_idempotency_key_is_replayed_not_stored_twice(client, provider, patient, conn):
    before = stored_documents(conn)
    first = upload(client, provider, patient["id"], title="Consent", **{"Idempotency-Key": '"upload-1"'})
    assert first.status_code == 201, first.get_json()
    again = upload(client, provider, patient["id"], title="Consent", **{"Idempotency-Key": '"upload-1"'})
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    assert again.headers["Location"] == first.headers["Location"]
    assert stored_documents(conn) == before + 1

    other_file = upload(client, provider, patient["id"], data=PDF + b"% another\n", title="Consent",
                        **{"Idempotency-Key": '"upload-1"'})
    assert assert_problem(other_file, 422)
    assert stored_documents(conn) == before + 1
