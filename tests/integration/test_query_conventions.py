"""Conventions of the project's SQL that span blocks or files, where the loader sees one block.

A statement with optional filters or an actor scope declares its plan (clarity/queries.py
explains ``-- plan: custom`` and ``-- plan: generic``), and the code calls each query with the
one method its result suffix allows, under a name that exists.
"""
from __future__ import annotations

import re
from pathlib import Path

from clarity.queries import VERBS, all_queries, load

ROOT = Path(__file__).resolve().parents[2]
QUERIES = {query.name: query for query in all_queries(load())}
# "(%(status)s::text IS NULL OR status = …)" and "(NOT %(active_only)s OR …)": a filter, or a
# keyset cursor, that each execution's values switch on or off.
OPTIONAL_FILTER = re.compile(r"%\(\w+\)s(::[\w\[\]]+)?\s+IS\s+NULL\s+OR\b|\bNOT\s+%\(\w+\)s\s+OR\b", re.IGNORECASE)
CALL = re.compile(rf"\.(?P<name>(?:{'|'.join(VERBS)})_\w+)\.(?P<method>one|all|stream|value|rowcount|execute|copy|sql)\b")


def has_optional_filter(sql: str) -> bool:
    return OPTIONAL_FILTER.search(sql) is not None


def has_actor_scope(sql: str) -> bool:
    """actor_is_admin anywhere, or actor_id after a WHERE (not a value stored, as updated_by)."""
    where = re.split(r"\bWHERE\b", sql, maxsplit=1, flags=re.IGNORECASE)
    return "%(actor_is_admin)s" in sql or (len(where) == 2 and "%(actor_id)s" in where[1])


def test_the_detectors_find_filters_and_scopes_and_skip_values_stored():
    assert has_optional_filter(QUERIES["list_audit_events"].sql)
    assert has_optional_filter(QUERIES["list_emergency_access_grants"].sql)  # NOT %(active_only)s OR
    assert has_actor_scope(QUERIES["get_patient"].sql)
    assert has_actor_scope(QUERIES["list_schedule_appointments"].sql)
    assert not has_actor_scope(QUERIES["update_alert_rule"].sql)  # actor_id only becomes updated_by
    assert not has_optional_filter(QUERIES["get_patient"].sql)


def test_every_query_with_optional_filters_or_an_actor_scope_declares_its_plan():
    undeclared = [
        f"{query.source}: {query.name}"
        for query in QUERIES.values()
        if (has_optional_filter(query.sql) or has_actor_scope(query.sql)) and query.plan is None
    ]

    assert not undeclared, ("declare '-- plan: custom', or '-- plan: generic' with the reason on "
                            "the next line:\n" + "\n".join(undeclared))


def test_the_code_calls_each_query_with_the_method_its_suffix_allows():
    calls = [
        (f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}", match["name"], match["method"])
        for path in sorted([*(ROOT / "clarity").rglob("*.py"), *(ROOT / "bench").glob("*.py")])
        for text in [path.read_text(encoding="utf-8")]
        for match in CALL.finditer(text)
    ]
    assert calls, "no query calls found: the pattern no longer matches the code"

    unknown = [f"{where}: {name}" for where, name, _ in calls if name not in QUERIES]
    wrong = [f"{where}: {name}.{method}() (run it with .{QUERIES[name].method}())"
             for where, name, method in calls
             if name in QUERIES and method not in ("sql", QUERIES[name].method)
             and (method, QUERIES[name].method) != ("stream", "all")]

    assert not unknown, "calls of queries that do not exist:\n" + "\n".join(unknown)
    assert not wrong, "\n".join(wrong)
