"""The floor: the least a Flask + psycopg service can do for GET-by-id on the patients table.

``GET /patients/<uuid>`` selects the columns Clarity's ``get_patient`` selects, by id only,
over a psycopg_pool; no auth, no decryption, no audit, no transaction. The envelope is sent
base64-encoded, so the response is about as large as Clarity's. Served by gunicorn with
Clarity's own ``gunicorn.conf.py``: ``app.extensions["clarity"].db`` offers the ``open()`` /
``close()`` its worker hooks call, so the pool opens after the fork as Clarity's does, and
its ``settings`` turn the hooks' audit sealer off (the floor writes no audit rows).

    DATABASE_URL=... gunicorn -c gunicorn.conf.py bench.floor_app:app
"""
from __future__ import annotations

import base64
import os
from types import SimpleNamespace

from flask import Flask, abort, jsonify
from psycopg_pool import ConnectionPool

SELECT = """SELECT id, provider_id, status, phi, phi_key_id, version, created_at, updated_at
  FROM patients WHERE id = %s"""


class Pool:
    """A lazily opened pool of autocommit connections to DATABASE_URL."""

    def __init__(self):
        self._pool: ConnectionPool | None = None

    def open(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = ConnectionPool(os.environ["DATABASE_URL"], open=True, min_size=2, max_size=8,
                                        kwargs={"autocommit": True, "options": "-c clarity.actor_role=admin"}, name="floor")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


app = Flask(__name__)
db = Pool()
app.extensions["clarity"] = SimpleNamespace(db=db, settings=SimpleNamespace(audit_seal_interval_seconds=0))


@app.get("/patients/<uuid:patient_id>")
def get_patient(patient_id):
    with db.open().connection() as conn:
        row = conn.execute(SELECT, (patient_id,)).fetchone()
    if row is None:
        abort(404)
    id_, provider_id, status, phi, key_id, version, created_at, updated_at = row
    return jsonify(id=id_, provider_id=provider_id, status=status,
                   phi=base64.b64encode(phi).decode(), phi_key_id=key_id, version=version,
                   created_at=created_at.isoformat(), updated_at=updated_at.isoformat())
