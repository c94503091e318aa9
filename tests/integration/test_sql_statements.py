"""Every named SQL statement prepares against the migrated schema, as the app role.

A renamed column, a missing grant-free object or a parameter whose type PostgreSQL cannot infer
breaks this test, not production.
"""
from __future__ import annotations

import re

import pytest

from clarity.queries import all_queries, load

QUERIES = {query.name: query for query in all_queries(load())}
# PREPARE takes SELECT/INSERT/UPDATE/DELETE/VALUES only: session set-up (the # statements:
# CREATE TEMP TABLE) runs before every check, so statements using its tables prepare too; copy_
# statements run with no rows instead of being prepared.
SETUP = [query for query in QUERIES.values() if query.method == "execute"]
_PARAM = re.compile(r"%\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)s")


def to_positional(sql: str) -> tuple[str, list[str]]:
    """Turn psycopg's %(name)s into $1, $2... (one number per distinct name, first appearance)."""
    names: list[str] = []

    def number(match):
        if match["name"] not in names:
            names.append(match["name"])
        return f"${names.index(match['name']) + 1}"

    return _PARAM.sub(number, sql).replace("%%", "%"), names


def test_placeholders_become_numbered_parameters_reusing_the_number_of_a_repeated_name():
    converted, names = to_positional("SELECT %(a)s, %(b)s, %(a)s, 'x%%'")

    assert converted == "SELECT $1, $2, $1, 'x%'"
    assert names == ["a", "b"]


def test_the_sql_files_hold_queries():
    assert len(QUERIES) >= 10


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_every_sql_statement_prepares_against_the_migrated_schema(conn, name):
    query = QUERIES[name]
    for setup in SETUP:
        conn.execute(setup.sql)
    if query.method in ("execute", "copy"):
        if query.method == "copy":
            with query.copy(conn):
                pass
        return
    converted, _ = to_positional(query.sql)

    conn.execute(f"PREPARE clarity_check AS {converted}")
    try:
        prepared = conn.execute(
            "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = 'clarity_check'"
        ).fetchone()
        assert prepared is not None, f"{query.source}: {name} did not prepare"
    finally:
        conn.execute("DEALLOCATE clarity_check")
