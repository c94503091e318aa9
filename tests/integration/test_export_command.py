"""flask export patients --out DIR [--provider ID]: one NDJSON file per resource type, a
progress bar on stderr, files mode 600 in a directory mode 700, every patient audited as an
export by the system, and a rerun after a crash that continues without losing or repeating a
line."""
from __future__ import annotations

import json
import stat
import uuid

import pytest

from clarity.services import bulk_export, export
from clarity.services.keys import SYSTEM
from tests.api.test_fhir_export import fhir_model, fill_chart


@pytest.fixture
def patients(client, make_staff, create_patient, conn) -> dict:
    """Two providers: the first with two plain patients and one with a full chart, the second
    with one plain patient."""
    first, second = make_staff("provider"), make_staff("provider")
    plain = [create_patient(first)["id"] for _ in range(2)]
    chart = fill_chart(client, first, create_patient, conn)
    return {"first": first, "second": second, "chart": chart,
            "ids": {first.id: [*plain, chart.patient["id"]], second.id: [create_patient(second)["id"]]}}


class Crash(Exception):
    """Stands for the process dying (a kill, an out-of-memory, a lost database)."""


def run_export(app, out, *extra):
    return app.test_cli_runner().invoke(args=["export", "patients", "--out", str(out), *extra])


def read_files(out) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.glob("*.ndjson"))}


def lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines()]


def test_one_file_per_resource_type_every_line_valid_private_files(app, patients, tmp_path):
    out = tmp_path / "export"
    result = run_export(app, out)

    assert result.exit_code == 0, result.output
    files = read_files(out)
    assert set(files) == {f"{t}.ndjson" for t in export.RESOURCE_TYPES}
    for name, data in files.items():
        for resource in lines(data):
            assert f"{resource['resourceType']}.ndjson" == name
            fhir_model(resource["resourceType"]).model_validate(resource)
    exported = {r["id"] for r in lines(files["Patient.ndjson"])}
    assert exported == {str(i) for ids in patients["ids"].values() for i in ids}
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o600}


def test_the_progress_bar_goes_to_stderr_and_the_summary_to_stdout(app, patients, tmp_path):
    result = run_export(app, tmp_path / "export")

    assert "exporting patients" in result.stderr and "exporting patients" not in result.stdout
    assert result.stdout.startswith("exported 4 patient(s), skipped 0 deleted")
    assert "Patient.ndjson 4" in result.stdout


def test_provider_limits_the_export_to_their_patients(app, patients, tmp_path):
    out = tmp_path / "export"
    result = run_export(app, out, "--provider", str(patients["second"].id))

    assert result.exit_code == 0, result.output
    assert [r["id"] for r in lines((out / "Patient.ndjson").read_bytes())] == [
        str(i) for i in patients["ids"][patients["second"].id]]


def test_an_unknown_provider_is_refused(app, patients, tmp_path):
    result = run_export(app, tmp_path / "export", "--provider", str(uuid.uuid4()))
    assert result.exit_code != 0 and "--provider must name a provider" in result.output


def test_each_patient_is_audited_as_an_export_by_the_system(app, patients, tmp_path, conn):
    run_export(app, tmp_path / "export")

    events = conn.execute("SELECT action, actor_id, actor_role, patient_id::text, outcome, fields FROM audit_events"
                          " WHERE event_type = 'patient.export'").fetchall()
    assert sorted(e[3] for e in events) == sorted(str(i) for ids in patients["ids"].values() for i in ids)
    assert {(e[0], e[1], e[2], e[4], tuple(e[5])) for e in events} == {
        ("E", SYSTEM.id, "admin", "success", tuple(sorted(export.RESOURCE_TYPES)))}


def test_a_rerun_after_a_crash_mid_patient_equals_a_clean_export(app, patients, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    assert run_export(app, clean).exit_code == 0
    resources, started = export.resources, []

    def crashing(uow, reader, actor, patient_id):
        started.append(patient_id)
        # The third patient dies after two of its lines are written, or all if it has fewer.
        for n, item in enumerate(resources(uow, reader, actor, patient_id)):
            yield item
            if len(started) == 3 and n == 1:
                raise Crash
        if len(started) == 3:
            raise Crash

    monkeypatch.setattr(export, "resources", crashing)
    resumed = tmp_path / "resumed"
    crashed = run_export(app, resumed)
    assert isinstance(crashed.exception, Crash)
    state = json.loads((resumed / bulk_export.STATE).read_text())["state"]
    assert state["completed"] == 2
    assert sum(len(lines(d)) for d in read_files(resumed).values()) > sum(c["lines"] for c in state["files"].values())

    monkeypatch.setattr(export, "resources", resources)
    result = run_export(app, resumed)

    assert result.exit_code == 0, result.output
    assert read_files(resumed) == read_files(clean)
    assert "exported 4 patient(s)" in result.stdout


def test_a_finished_export_rerun_changes_nothing(app, patients, tmp_path):
    out = tmp_path / "export"
    run_export(app, out)
    before = read_files(out)

    result = run_export(app, out)

    assert result.exit_code == 0 and read_files(out) == before


@pytest.mark.parametrize("stray", ["notes.txt", "Observation.ndjson"])
def test_a_directory_holding_something_else_is_refused_and_left_alone(app, patients, tmp_path, stray):
    out = tmp_path / "export"
    out.mkdir()
    (out / stray).write_text("mine")

    result = run_export(app, out)

    assert result.exit_code != 0 and str(out) in result.output
    assert [p.name for p in out.iterdir()] == [stray] and (out / stray).read_text() == "mine"


def test_resuming_with_another_provider_is_refused(app, patients, tmp_path, monkeypatch):
    out = tmp_path / "export"
    monkeypatch.setattr(bulk_export.BulkExport, "run", lambda self, progress: self.state)
    run_export(app, out)  # listed the patients, exported none

    result = run_export(app, out, "--provider", str(patients["first"].id))

    assert result.exit_code != 0 and "another --provider" in result.output


def test_a_patient_deleted_after_the_export_started_is_skipped(app, client, patients, tmp_path, monkeypatch):
    out = tmp_path / "export"
    monkeypatch.setattr(bulk_export.BulkExport, "run", lambda self, progress: self.state)
    run_export(app, out)
    monkeypatch.undo()
    gone = patients["ids"][patients["second"].id][0]
    headers = patients["second"].headers
    version = client.get(f"/api/v1/patients/{gone}", headers=headers).headers["ETag"]
    assert client.delete(f"/api/v1/patients/{gone}", headers={**headers, "If-Match": version}).status_code == 204

    result = run_export(app, out)

    assert result.exit_code == 0 and "exported 3 patient(s), skipped 1 deleted" in result.stdout
    assert str(gone) not in (out / "Patient.ndjson").read_text()


def test_a_second_export_into_a_directory_in_use_is_refused_until_the_first_ends(app, patients, tmp_path):
    out = tmp_path / "export"
    db = app.extensions["clarity"].db
    first = bulk_export.BulkExport.open(db, out)
    try:
        with pytest.raises(bulk_export.ExportRefused, match="Another export is running"):
            bulk_export.BulkExport.open(db, out)
        result = run_export(app, out)
        assert result.exit_code != 0 and "Another export is running" in result.output
        assert read_files(out) == {}
    finally:
        first.close()

    result = run_export(app, out)
    assert result.exit_code == 0, result.output
    assert len(lines(read_files(out)["Patient.ndjson"])) == first.total
