"""TLS to PostgreSQL: the app honours sslmode/sslrootcert in DATABASE_URL as libpq reads them.

A cluster of its own runs with ``ssl=on`` and a certificate for ``localhost`` only, signed by a CA
made here. A wrong CA or a host name the certificate does not name fails the way an unreachable
database does: the app starts, the pool logs libpq's reason, ``/health/ready`` and every request
answer 503 with Retry-After (never a 500).
"""
from __future__ import annotations

import datetime
import logging
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
import testing.postgresql
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clarity import localpg
from tests.conftest import APP_ROLE, make_settings, migrate

pytestmark = pytest.mark.slow

POOL_TIMEOUT = 1.0


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, issuer, public_key, signing_key, *, ca: bool, alt_names=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(alt_names)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(directory: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA written to ``directory/name.pem``; returns its path, key and certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(_name(name), _name(name), key.public_key(), key, ca=True)
    path = directory / f"{name}.pem"
    path.write_bytes(_pem(cert))
    return path, key, cert


def make_server_certificate(directory: Path, ca_key, ca_cert) -> tuple[Path, Path]:
    """A certificate for ``localhost`` only (no IP address), and its key (mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(_name("localhost"), ca_cert.subject, key.public_key(), ca_key, ca=False,
                        alt_names=[x509.DNSName("localhost")])
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(_pem(cert))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as file:
        file.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cert_path, key_path


def hand_to_server_user(directory: Path) -> None:
    """As root the server runs as localpg's unprivileged user, which must own its key file
    (PostgreSQL refuses a key another user owns or others can read) and enter the directory."""
    if os.geteuid() != 0:
        return
    owner = pwd.getpwnam(localpg.PG_USER)
    for path in (directory, *directory.iterdir()):
        os.chown(path, owner.pw_uid, owner.pw_gid)


class TlsServer:
    def __init__(self, pg: testing.postgresql.Postgresql, ca: Path, other_ca: Path):
        self.pg, self.ca, self.other_ca = pg, ca, other_ca

    def url(self, database="postgres", user="postgres", host="localhost", ca: Path | None = None) -> str:
        # hostaddr pins the address (the server listens on 127.0.0.1 only); libpq checks the
        # certificate against host.
        return (f"postgresql://{user}@{host}:{self.pg.settings['port']}/{database}"
                f"?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca or self.ca}")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    initdb, postgres = localpg.server_wrappers(tmp_path_factory.mktemp("pgbin"))
    # Not under tmp_path: as root the server user must be able to reach the files.
    certs = Path(tempfile.mkdtemp(prefix="clarity-tls-"))
    pg = None
    try:
        ca, ca_key, ca_cert = make_ca(certs, "clarity-test-ca")
        other_ca, _, _ = make_ca(certs, "some-other-ca")
        cert, key = make_server_certificate(certs, ca_key, ca_cert)
        hand_to_server_user(certs)
        pg = testing.postgresql.Postgresql(
            initdb=initdb, postgres=postgres,
            postgres_args=f"-h 127.0.0.1 -F -c logging_collector=off -c fsync=off -c synchronous_commit=off "
                          f"-c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}",
        )
        server = TlsServer(pg, ca, other_ca)
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE clarity")
        migrate(server.url("clarity"))
        with psycopg.connect(server.url("clarity"), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN IN ROLE clarity_app")
        yield server
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(certs, ignore_errors=True)


@pytest.fixture
def app_for(make_app, tls_server):
    """``app_for(url)``: an app whose DATABASE_URL is ``url`` (see conftest.make_app)."""
    return lambda url: make_app(make_settings(tls_server, "clarity", database_url=url, pool_min_size=1,
                                              pool_max_size=2, pool_timeout=POOL_TIMEOUT))


def test_verify_full_with_the_servers_ca_and_name_serves_over_tls(tls_server, app_for):
    app = app_for(tls_server.url("clarity", APP_ROLE))
    client = app.test_client()

    assert client.get("/health/ready").status_code == 200
    with app.extensions["clarity"].db.connection() as conn:
        ssl, = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert ssl is True


@pytest.mark.parametrize("mismatch, libpq_says", [
    ("wrong CA", "certificate verify failed"),
    ("wrong host name", "does not match host name"),
])
def test_a_certificate_that_does_not_verify_is_refused_with_503_not_500(tls_server, app_for, caplog,
                                                                         mismatch, libpq_says):
    url = (tls_server.url("clarity", APP_ROLE, ca=tls_server.other_ca) if mismatch == "wrong CA"
           else tls_server.url("clarity", APP_ROLE, host="127.0.0.1"))
    app = app_for(url)
    client = app.test_client()
    caplog.set_level(logging.WARNING, logger="psycopg.pool")

    app.extensions["clarity"].db.open()  # what gunicorn's post_worker_init does
    ready = client.get("/health/ready")
    request = client.get("/api/v1/users/me", headers={"Authorization": "Bearer not-a-real-token"})

    assert ready.status_code == 503 and ready.headers["Retry-After"]
    assert ready.get_json()["status"] == "unavailable"
    assert request.status_code == 503 and request.headers["Retry-After"]
    assert libpq_says in caplog.text
