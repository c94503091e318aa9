"""The SQL loader: named blocks in ``sql/*.sql`` become Query objects.

A block starts with ``-- name: verb_noun`` plus an optional result suffix (``^`` one row or
None, ``$`` one value, ``!`` row count, none: all rows). Comment lines right after the name
are its docstring; a docstring line ``plan: custom`` makes the statement planned for each
execution's values instead of being prepared once (for optional filters and scopes, where a
generic plan cannot use the right index). Every statement is sent with a leading ``/* clarity:name */`` so
``pg_stat_statements`` and slow-query logs point back at the file.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
# create_ and copy_ name session set-up (CREATE TEMP TABLE) and COPY statements.
VERBS = ("get", "list", "count", "insert", "update", "delete", "upsert", "create", "copy")
_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z][a-z0-9_]*)(?P<op>[\^$!]?)\s*$")
# A name line that lost its colon ("-- name get_x"), not prose ("-- name of the patient").
_LOOSE_NAME = re.compile(r"^--\s*name\s*(:|\s+\S+\s*$)")


class QueryFileError(ValueError):
    """A malformed block in an SQL file; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Query:
    name: str
    operator: str  # "^" one row, "$" one value, "!" row count, "" all rows
    sql: str
    doc: str
    source: str  # file:line, for error messages
    prepare: bool | None = None  # None: psycopg prepares after a few runs; False: never

    def _execute(self, cur, params):
        cur.execute(self.sql, params, prepare=self.prepare)

    def one(self, conn, params=None, row_factory=None):
        """Run and return the first row, or None when there is none."""
        with conn.cursor(row_factory=row_factory) if row_factory else conn.cursor() as cur:
            self._execute(cur, params)
            return cur.fetchone()

    def all(self, conn, params=None, row_factory=None):
        """Run and return every row."""
        with conn.cursor(row_factory=row_factory) if row_factory else conn.cursor() as cur:
            self._execute(cur, params)
            return cur.fetchall()

    def value(self, conn, params=None):
        """Run and return the first column of the first row (None when no row)."""
        with conn.cursor() as cur:
            self._execute(cur, params)
            row = cur.fetchone()
            return None if row is None else row[0]

    def rowcount(self, conn, params=None) -> int:
        """Run and return the number of rows affected."""
        with conn.cursor() as cur:
            self._execute(cur, params)
            return cur.rowcount


def parse(text: str, filename: str) -> dict[str, Query]:
    """Parse one SQL file's text into its named queries; raise QueryFileError on a bad block."""
    queries: dict[str, Query] = {}
    current = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        match = _NAME.match(line)
        if match:
            _finish(current, queries)
            name = match["name"]
            where = f"{filename}:{lineno}"
            if name.split("_", 1)[0] not in VERBS or "_" not in name:
                raise QueryFileError(f"{where}: query name {name!r} must be verb_noun with a verb in {VERBS}")
            if name in queries or (current and current["name"] == name):
                raise QueryFileError(f"{where}: query {name!r} is defined twice")
            current = {"name": name, "op": match["op"], "where": where, "doc": [], "body": []}
        elif _LOOSE_NAME.match(line):
            raise QueryFileError(f"{filename}:{lineno}: malformed name line {line.strip()!r}")
        elif current is None:
            if line.strip() and not line.lstrip().startswith("--"):
                raise QueryFileError(f"{filename}:{lineno}: SQL before the first '-- name:' line")
        elif line.lstrip().startswith("--") and not current["body"]:
            current["doc"].append(line.lstrip()[2:].strip())
        else:
            current["body"].append(line)
    _finish(current, queries)
    return queries


def _finish(current, queries):
    if current is None:
        return
    body = "\n".join(current["body"]).strip()
    if not any(line.strip() and not line.lstrip().startswith("--") for line in current["body"]):
        raise QueryFileError(f"{current['where']}: query {current['name']!r} has no SQL")
    if re.search(r"%s|(?<!%)%[^(%]", body):
        raise QueryFileError(f"{current['where']}: query {current['name']!r} uses a positional parameter; name it %(x)s")
    queries[current["name"]] = Query(
        name=current["name"],
        operator=current["op"],
        sql=f"/* clarity:{current['name']} */\n{body}",
        doc="\n".join(current["doc"]),
        source=current["where"],
        prepare=False if any(line.lower() == "plan: custom" for line in current["doc"]) else None,
    )


def load(directory: Path = SQL_DIR) -> SimpleNamespace:
    """Load every ``*.sql`` file: ``load().patients.get_patient`` is a Query."""
    files = sorted(Path(directory).glob("*.sql"))
    if not files:
        raise QueryFileError(f"{directory}: no .sql files")
    return SimpleNamespace(**{
        path.stem: SimpleNamespace(**parse(path.read_text(encoding="utf-8"), path.name))
        for path in files
    })


def all_queries(namespace: SimpleNamespace) -> list[Query]:
    """Every Query in a loaded namespace, for the PREPARE test and tooling."""
    return [query for group in vars(namespace).values() for query in vars(group).values()]
