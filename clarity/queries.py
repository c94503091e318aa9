"""The SQL loader: named blocks in ``sql/*.sql`` become Query objects.

A block starts with ``-- name: verb_noun`` (a verb of VERBS) plus an optional result suffix,
which also names the one method that runs the query; any other method raises QueryCallError
naming the query, at its first call:

    ``^`` one row or None: ``.one()``       ``$`` one value (None: no row): ``.value()``
    ``!`` row count: ``.rowcount()``        ``#`` no result (DDL), never prepared: ``.execute()``
    none: every row: ``.all()``             ``copy_`` verb (a COPY statement, no suffix): ``.copy()``
    none, many rows: ``.stream()``, an iterator over a server-side cursor

Comment lines right after the name line are its docstring: prose, and directives. A docstring
line is a *directive* when it is a lowercase key, a colon and one word (``-- plan: custom``),
or when it starts with a directive key in any case or shape (``Plan: custom``, ``plan
custom``, ``plan = custom``, ``plan: custom plans``). A directive with an unknown key or value,
given twice, or written outside a docstring (where it would do nothing) fails the load with its
file and line. Every other line is prose: capitalised labels (``Params: id.``, ``Returns: …``)
and lowercase lines with more than one word after the colon (``-- provider: the exclusion …``).

Directives (DIRECTIVES):

- ``plan: custom``: never prepare the statement, so PostgreSQL plans each execution for its
  values. For optional filters (``%(x)s IS NULL OR …``), keyset cursors and actor scopes, where
  one generic plan cannot pick the right index for every set of values.
- ``plan: generic``: the default (psycopg prepares a statement after a few executions and
  PostgreSQL may then reuse a generic plan), declared; the next docstring line gives the reason.

Every statement is sent with a leading ``/* clarity:name */`` so ``pg_stat_statements`` and
slow-query logs point back at the file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
# set_, lock_ and revoke_ say what a statement does when it is not a read or a plain write;
# create_ makes things (partitions, a session's staging table) and copy_ names COPY statements.
VERBS = ("get", "list", "count", "insert", "update", "delete", "upsert", "create", "copy", "set", "lock",
         "revoke")
# The method that runs a query, by its result suffix (copy_ statements: copy).
METHODS = {"^": "one", "$": "value", "!": "rowcount", "#": "execute", "": "all"}
DIRECTIVES = {"plan": ("custom", "generic")}
_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z][a-z0-9_]*)(?P<op>[\^$!#]?)\s*$")
# A name line that lost its colon ("-- name get_x"), not prose ("-- name of the patient").
_LOOSE_NAME = re.compile(r"^--\s*name\s*(:|\s+\S+\s*$)")
_DIRECTIVE = re.compile(r"^(?P<key>[a-z][a-z_]*):\s*(?P<value>\S+)$")
_KNOWN_DIRECTIVE = re.compile(rf"^(?P<key>{'|'.join(DIRECTIVES)}):\s*(?P<value>.*)$")
# A known key in another shape: "Plan: custom", "plan custom", "plan = custom", "plan: a b".
_LOOSE_DIRECTIVE = re.compile(rf"^(?i:{'|'.join(DIRECTIVES)})(\s*[:=]|\s+\S+$)")


class QueryFileError(ValueError):
    """A malformed block in an SQL file; the message names the file and line."""


class QueryCallError(TypeError):
    """A query run with a method its result suffix does not allow; the message names it."""


@dataclasses.dataclass(frozen=True)
class Query:
    name: str
    operator: str  # "^" one row, "$" one value, "!" row count, "#" no result, "" all rows
    sql: str
    doc: str  # the docstring's prose
    source: str  # file:line, for error messages
    plan: str | None = None  # the plan directive: "custom", "generic" or None (not declared)

    @property
    def method(self) -> str:
        """The name of the one method that runs this query."""
        return "copy" if self.name.startswith("copy_") else METHODS[self.operator]

    @property
    def prepare(self) -> bool | None:
        """psycopg's ``prepare``: None lets it prepare after a few runs; False never does."""
        return False if self.plan == "custom" or self.operator == "#" else None

    def _check(self, method: str) -> None:
        if method != self.method and (method, self.method) != ("stream", "all"):
            kind = "is a COPY statement" if self.method == "copy" else f"has suffix {self.operator or 'none'!r}"
            raise QueryCallError(f"query {self.name!r} ({self.source}) {kind}: run it with "
                                 f".{self.method}(), not .{method}()")

    def _execute(self, cur, params):
        cur.execute(self.sql, params, prepare=self.prepare)

    def one(self, conn, params=None, row_factory=None):
        """Run a ``^`` query and return its first row, or None when there is none."""
        self._check("one")
        with conn.cursor(row_factory=row_factory) if row_factory else conn.cursor() as cur:
            self._execute(cur, params)
            return cur.fetchone()

    def all(self, conn, params=None, row_factory=None):
        """Run a query without suffix and return every row."""
        self._check("all")
        with conn.cursor(row_factory=row_factory) if row_factory else conn.cursor() as cur:
            self._execute(cur, params)
            return cur.fetchall()

    def stream(self, conn, params=None, row_factory=None, itersize: int = 1000):
        """Run a query without suffix through a server-side cursor (named after the query) and
        return an iterator of its rows, fetched ``itersize`` at a time, so memory stays bounded
        however many rows match. The cursor lives in the caller's open transaction."""
        self._check("stream")
        return self._stream(conn, params, row_factory, itersize)

    def _stream(self, conn, params, row_factory, itersize):
        with conn.cursor(self.name, row_factory=row_factory) if row_factory else conn.cursor(self.name) as cur:
            cur.itersize = itersize
            cur.execute(self.sql, params)
            yield from cur

    def value(self, conn, params=None):
        """Run a ``$`` query and return the first column of the first row (None when no row)."""
        self._check("value")
        with conn.cursor() as cur:
            self._execute(cur, params)
            row = cur.fetchone()
            return None if row is None else row[0]

    def rowcount(self, conn, params=None) -> int:
        """Run a ``!`` query and return the number of rows affected."""
        self._check("rowcount")
        with conn.cursor() as cur:
            self._execute(cur, params)
            return cur.rowcount

    def execute(self, conn, params=None) -> None:
        """Run a ``#`` statement (DDL), unprepared; it returns nothing."""
        self._check("execute")
        with conn.cursor() as cur:
            self._execute(cur, params)

    @contextlib.contextmanager
    def copy(self, conn):
        """Run a ``copy_`` statement: yield psycopg's Copy (``set_types``, ``write_row``)."""
        self._check("copy")
        with conn.cursor() as cur, cur.copy(self.sql) as copy:
            yield copy


def parse(text: str, filename: str) -> dict[str, Query]:
    """Parse one SQL file's text into its named queries; raise QueryFileError on a bad block."""
    queries: dict[str, Query] = {}
    current = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        where = f"{filename}:{lineno}"
        match = _NAME.match(line)
        comment = line.lstrip()[2:].strip() if line.lstrip().startswith("--") else None
        if match:
            _finish(current, queries)
            name = match["name"]
            if name.split("_", 1)[0] not in VERBS or "_" not in name:
                raise QueryFileError(f"{where}: query name {name!r} must be verb_noun with a verb in {VERBS}")
            if name in queries or (current and current["name"] == name):
                raise QueryFileError(f"{where}: query {name!r} is defined twice")
            current = {"name": name, "op": match["op"], "where": where, "doc": [], "directives": {}, "body": []}
        elif _LOOSE_NAME.match(line):
            raise QueryFileError(f"{where}: malformed name line {line.strip()!r}")
        elif current is not None and comment is not None and not current["body"]:
            _read_docstring_line(current, comment, where)
        elif comment is not None and _LOOSE_DIRECTIVE.match(comment):
            raise QueryFileError(f"{where}: directive {comment!r} outside a docstring (the comment "
                                 "lines right after the name line) does nothing")
        elif current is None:
            if line.strip() and comment is None:
                raise QueryFileError(f"{where}: SQL before the first '-- name:' line")
        else:
            current["body"].append(line)
    _finish(current, queries)
    return queries


def _read_docstring_line(current, text: str, where: str) -> None:
    directive = _DIRECTIVE.match(text) or _KNOWN_DIRECTIVE.match(text)
    if directive is None and _LOOSE_DIRECTIVE.match(text):
        raise QueryFileError(f"{where}: malformed directive {text!r}; write '-- key: value', e.g. '-- plan: custom'")
    if directive is None:
        current["doc"].append((where, None, text))
        return
    key, value = directive["key"], directive["value"]
    if key not in DIRECTIVES:
        raise QueryFileError(f"{where}: unknown directive {key!r} (known: {', '.join(DIRECTIVES)})")
    if value not in DIRECTIVES[key]:
        raise QueryFileError(f"{where}: unknown {key} {value!r} (known: {', '.join(DIRECTIVES[key])})")
    if key in current["directives"]:
        raise QueryFileError(f"{where}: directive {key!r} given twice for query {current['name']!r}")
    current["directives"][key] = value
    current["doc"].append((where, key, value))


def _finish(current, queries):
    if current is None:
        return
    name, where, doc = current["name"], current["where"], current["doc"]
    body = "\n".join(current["body"]).strip()
    if not any(line.strip() and not line.lstrip().startswith("--") for line in current["body"]):
        raise QueryFileError(f"{where}: query {name!r} has no SQL")
    if re.search(r"%s|(?<!%)%[^(%]", body):
        raise QueryFileError(f"{where}: query {name!r} uses a positional parameter; name it %(x)s")
    if name.startswith("copy_") and (current["op"] or not re.match(r"(?i)copy\b", body)):
        raise QueryFileError(f"{where}: query {name!r}: copy_ names a COPY statement, without suffix")
    for (line_where, key, value), after in zip(doc, doc[1:] + [(None, "end", None)]):
        if (key, value) == ("plan", "generic") and after[1] is not None:
            raise QueryFileError(f"{line_where}: query {name!r}: give the reason for 'plan: generic' on the next line")
    queries[name] = Query(
        name=name,
        operator=current["op"],
        sql=f"/* clarity:{name} */\n{body}",
        doc="\n".join(text for _, key, text in doc if key is None),
        source=where,
        plan=current["directives"].get("plan"),
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
