"""Flask commands: ``db upgrade|status``, ``keys generate``, ``seed demo|bench``, ``audit seal|verify|head``,
``idempotency purge``, ``export patients``."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click
from flask.cli import AppGroup

from clarity import runtime, schema

db_cli = AppGroup("db", help="Schema migrations (yoyo).")
keys_cli = AppGroup("keys", help="Encryption keys.")
seed_cli = AppGroup("seed", help="Demo and benchmark data for development.")
audit_cli = AppGroup("audit", help="The tamper-evident audit trail: seal, verify, export the chain head.")
idempotency_cli = AppGroup("idempotency", help="Idempotency keys: purge the expired ones.")
export_cli = AppGroup("export", help="FHIR R4 bulk export of patients' records.")


def init_app(app) -> None:
    for group in (db_cli, keys_cli, seed_cli, audit_cli, biometrics_cli, idempotency_cli, export_cli):
        app.cli.add_command(group)


def _owner_url() -> str:
    """The schema owner's URL: CLARITY_MIGRATION_DATABASE_URL, else DATABASE_URL."""
    settings = runtime().settings
    url = settings.migration_database_url or settings.database_url
    if not url:
        raise click.ClickException("Set CLARITY_MIGRATION_DATABASE_URL (or DATABASE_URL).")
    return url


@contextlib.contextmanager
def _owner_connection(**options):
    """An autocommit connection as the schema owner (``options`` go to psycopg.connect); a
    database that cannot be reached is a one-line error, never a traceback."""
    import psycopg

    try:
        conn = schema.owner_connection(_owner_url(), **options)
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot connect to the database ({type(exc).__name__})") from None
    with conn:
        yield conn


@db_cli.command("upgrade")
def db_upgrade():
    """Apply every pending migration."""
    click.echo(f"applied {schema.apply_migrations(_owner_url())} migration(s)")


@db_cli.command("status")
def db_status():
    """List migrations and whether each is applied; exit 1 when any is pending."""
    with schema.migration_backend(_owner_url()) as (backend, migrations):
        applied = {m.id for m in backend.to_rollback(migrations)}
    for migration in migrations:
        click.echo(f"{'applied' if migration.id in applied else 'PENDING'}  {migration.id}")
    if len(applied) < len(migrations):
        sys.exit(1)


@keys_cli.command("generate")
def keys_generate():
    """Print a fresh data key and blind-index key as environment assignments."""
    from clarity.security.crypto import generate_key

    kid = "k" + os.urandom(3).hex()
    click.echo(f"CLARITY_DATA_KEYS={kid}:{generate_key()}")
    click.echo(f"CLARITY_ACTIVE_DATA_KEY={kid}")
    click.echo(f"CLARITY_BLIND_INDEX_KEY={generate_key()}")


def _key_command(run, label: str, batch_size: int) -> None:
    """Run a key-rotation step with progress lines; exit 1 when rows failed or remain."""
    from clarity.services import keys

    clarity = runtime()
    if clarity.db.keyring is None:
        raise click.ClickException("CLARITY_DATA_KEYS and CLARITY_BLIND_INDEX_KEY are not configured.")
    try:
        report = run(clarity.db, batch_size=batch_size, progress=lambda line: click.echo(line))
    except keys.RotationRefused as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"{label}: {report.done} rows, {len(report.failed)} failed to decrypt, {report.remaining} remaining")
    if report.failed:
        click.echo("failed ids: " + " ".join(sorted(str(i) for i in report.failed)), err=True)
    if report.failed or report.remaining:
        sys.exit(1)


_batch_option = click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True,
                             help="Rows per transaction.")


@keys_cli.command("rotate")
@_batch_option
def keys_rotate(batch_size):
    """Re-encipher every row not under CLARITY_ACTIVE_DATA_KEY (resumable; rerun after a crash)."""
    from clarity.services import keys
    _key_command(keys.rotate_data_keys, "rotate", batch_size)


@keys_cli.command("rebuild-index")
@_batch_option
def keys_rebuild_index(batch_size):
    """Fill the blind indexes under CLARITY_BLIND_INDEX_NEXT_KEY for every patient lacking them."""
    from clarity.services import keys
    _key_command(keys.rebuild_blind_indexes, "rebuild-index", batch_size)


@keys_cli.command("switch-index")
@_batch_option
def keys_switch_index(batch_size):
    """After promoting the next blind-index key: recompute every patient's blind indexes under it."""
    from clarity.services import keys
    _key_command(keys.switch_blind_indexes, "switch-index", batch_size)


@seed_cli.command("demo")
@click.option("--password", envvar="CLARITY_DEMO_PASSWORD", help="Password for both demo users.")
def seed_demo(password):
    """Create (or reset) a demo admin and a demo provider, and print their credentials."""
    from clarity.services import users

    _refuse_production("demo")
    clarity = runtime()
    password = password or os.urandom(12).hex()
    for email, role in (("admin@clarity.local", "admin"), ("provider@clarity.local", "provider")):
        clarity.db.run(lambda uow: users.seed_user(uow, email=email, role=role, password=password,
                                                passwords=clarity.passwords))
        click.echo(f"{role:9s} {email}  password: {password}")


def _refuse_production(command: str) -> None:
    if runtime().settings.env == "production":
        raise click.ClickException(f"seed {command} is for development; it refuses CLARITY_ENV=production")


@seed_cli.command("bench")
@click.option("--patients", type=click.IntRange(0), required=True, help="Patients in all.")
@click.option("--providers", type=click.IntRange(1), required=True, help="Providers to spread them over.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The seed JSON to write (mode 600: it holds bearer tokens).")
def seed_bench(patients, providers, out):
    """Add fresh providers, each with a bearer token valid for CLARITY_TOKEN_MAX_AGE_HOURS, and
    --patients patients spread over them; write {"providers": [{"provider_id", "token",
    "patient_ids"}]} to --out, atomically. Prints counts only, never a token or PHI."""
    from clarity.services import seeding

    _refuse_production("bench")
    clarity = runtime()
    if clarity.db.keyring is None:
        raise click.ClickException("CLARITY_DATA_KEYS and CLARITY_BLIND_INDEX_KEY are not configured.")
    started = time.perf_counter()
    seeded = seeding.seed_providers(clarity.db, patients=patients, providers=providers,
                                    max_age_seconds=clarity.settings.token_max_age_hours * 3600)
    seconds = time.perf_counter() - started
    _write_private_json(out, {"providers": [
        {"provider_id": str(p.provider_id), "token": p.token, "patient_ids": p.patient_ids} for p in seeded]})
    # Fresh statistics, so the first benchmark requests are planned as the later ones (as the
    # owner: VACUUM skips, with a warning, tables the app role does not own).
    with _owner_connection() as conn:
        conn.execute("VACUUM ANALYZE users, auth_tokens, patients")
    click.echo(f"seeded {patients} patient(s) over {providers} provider(s) in {seconds:.1f}s; wrote {out}")


def _write_private_json(path: Path, document) -> None:
    """Write ``document`` to ``path`` with mode 600, atomically: a temporary file beside it
    (created 600 by mkstemp), then a rename, so a reader never sees half a file."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(document, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def _audit_repository(*, snapshot: bool = False):
    """An AuditRepository on a connection of its own (the migration URL, else DATABASE_URL),
    inside one transaction: with ``snapshot``, REPEATABLE READ and read-only, so a
    verification sees one consistent state (and, holding no xid, never delays sealing)."""
    import psycopg
    from clarity.repositories.audit import AuditRepository

    clarity = runtime()
    with _owner_connection() as conn:
        if snapshot:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
        with conn.transaction():
            yield AuditRepository(conn, clarity.db.queries.audit)


@audit_cli.command("seal")
@click.option("--wait-seconds", default=10.0, show_default=True,
              help="How long to wait while another sealer is at work.")
def audit_seal(wait_seconds):
    """Seal every committed audit event into the hash chain and print how many."""
    from clarity import audit_chain

    deadline = time.monotonic() + wait_seconds
    while True:
        with _audit_repository() as repo:
            sealed = audit_chain.seal(repo, max_batches=None)
        if sealed is not None:
            break
        if time.monotonic() > deadline:
            raise click.ClickException("another sealer kept the lock; try again")
        time.sleep(0.2)
    click.echo(f"sealed {sealed} audit event(s)")


@audit_cli.command("head")
def audit_head():
    """Print the chain head as JSON, to keep outside the database (see ``verify --head``)."""
    from clarity import audit_chain

    with _audit_repository(snapshot=True) as repo:
        click.echo(json.dumps(audit_chain.export_head(repo)))


@audit_cli.command("verify")
@click.option("--head", "head_text", metavar="FILE_OR_JSON",
              help="A head exported by `audit head`: the chain must still hold it.")
@click.option("--max-unsealed-seconds", type=click.FloatRange(min=0), default=300, show_default=True,
              help="Report an event left unsealed longer than this.")
def audit_verify(head_text, max_unsealed_seconds):
    """Check the audit trail; print OK (exit 0) or its first problem (exit 1)."""
    from clarity import audit_chain

    head = _read_head(head_text) if head_text else None
    with _audit_repository(snapshot=True) as repo:
        report = audit_chain.verify(repo, head=head, max_unsealed_seconds=max_unsealed_seconds)
    if report.problem:
        click.echo(f"FAIL {report.problem.kind}: {report.problem.message} "
                   f"({report.seals} seal(s) verified before it)")
        sys.exit(1)
    click.echo(f"OK: {report.seals} seal(s) verified; {report.unsealed} event(s) awaiting sealing")


def _read_head(text: str) -> tuple[int, bytes]:
    """An exported head from JSON text (starting with ``{``) or a file; UsageError otherwise."""
    from clarity import audit_chain

    try:
        raw = text if text.lstrip().startswith("{") else Path(text).read_text(encoding="utf-8")
        return audit_chain.parse_head(json.loads(raw))
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"--head takes a file or the JSON printed by `audit head` ({exc})") from None


@export_cli.command("patients")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The directory for the NDJSON files (made mode 700; rerun with it to resume).")
@click.option("--provider", "provider_id", type=click.UUID, default=None, help="Only this provider's patients.")
def export_patients(out, provider_id):
    """Export every live patient (or one provider's) as FHIR R4 NDJSON, one file per resource
    type (Patient.ndjson, Observation.ndjson, ...), each patient audited as an export by the
    system. Resumable: rerun with the same --out after a crash to continue where it stopped."""
    from clarity.services import bulk_export

    clarity = runtime()
    if clarity.db.keyring is None:
        raise click.ClickException("CLARITY_DATA_KEYS and CLARITY_BLIND_INDEX_KEY are not configured.")
    try:
        job = bulk_export.BulkExport.open(clarity.db, out, provider_id=provider_id)
    except bulk_export.ExportRefused as exc:
        raise click.ClickException(exc.detail) from None
    try:
        with click.progressbar(length=job.total, label="exporting patients", file=sys.stderr) as bar:
            bar.update(job.completed)
            state = job.run(progress=bar.update)
    finally:
        job.close()
    files = ", ".join(f"{name} {counts['lines']}" for name, counts in sorted(state.files.items()))
    click.echo(f"exported {state.completed - state.skipped} patient(s), skipped {state.skipped} deleted, "
               f"to {out}: {files or 'no lines'}")


biometrics_cli = AppGroup("biometrics", help="Biometric readings: the monthly partitions of their table.")


@biometrics_cli.command("partitions")
@click.option("--months-ahead", type=click.IntRange(0, 120), default=3, show_default=True,
              help="Create partitions up to this many months after the current one.")
def biometrics_partitions(months_ahead):
    """Create the missing monthly (UTC) partitions of biometric_readings, from 24 months back to
    --months-ahead months ahead. Idempotent: run it monthly (cron, or each deploy). DDL, so as
    the table's owner: CLARITY_MIGRATION_DATABASE_URL, else DATABASE_URL."""
    import datetime as dt

    import psycopg
    from clarity.repositories.biometrics import BiometricRepository
    from clarity.services import biometrics

    clarity = runtime()
    # Creating a partition locks the parent table briefly: give up rather than queue behind a
    # long transaction (and make every ingest queue behind us).
    with _owner_connection(options="-c lock_timeout=5s") as conn:
        try:
            with conn.transaction():
                created, partitions = biometrics.ensure_partitions(
                    BiometricRepository(conn, clarity.db.queries.biometrics), months_ahead=months_ahead)
        except psycopg.errors.InsufficientPrivilege:
            raise click.ClickException("creating partitions needs the owner of biometric_readings: "
                                       "set CLARITY_MIGRATION_DATABASE_URL") from None
        except psycopg.errors.LockNotAvailable:
            raise click.ClickException("biometric_readings is busy (lock timeout); try again") from None
    first, last = (p.astimezone(dt.timezone.utc) for p in (partitions[0].starts_at, partitions[-1].ends_at))
    click.echo(f"created {created} partition(s); {len(partitions)} cover {first:%Y-%m-%d} to {last:%Y-%m-%d} "
               "(UTC, end exclusive)")


@idempotency_cli.command("purge")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Keys deleted per transaction.")
def idempotency_purge(batch_size):
    """Delete the kept answers of every expired Idempotency-Key (older than
    CLARITY_IDEMPOTENCY_TTL_SECONDS). Each gunicorn worker's background sealer also does this,
    once a minute; run it from cron where the sealer is off. As the app role (DATABASE_URL)."""
    from clarity import idempotency
    from clarity.errors import ClarityError

    try:
        purged = idempotency.purge(runtime().db, batch_size=batch_size)
    except ClarityError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"purged {purged} expired idempotency key(s)")
