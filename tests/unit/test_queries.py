"""The SQL loader: named blocks become Query objects; a malformed file fails fast, naming file and line."""
from __future__ import annotations

import textwrap

import pytest

from clarity.queries import Query, QueryCallError, QueryFileError, all_queries, load, parse


def sql(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


GOOD = sql("""
    -- A file header comment is allowed before the first block.

    -- name: get_patient^
    -- One patient.
    -- Params: id.
    SELECT id FROM patients WHERE id = %(id)s;

    -- name: get_patient_count$
    SELECT count(*) FROM patients;

    -- name: delete_patient!
    DELETE FROM patients WHERE id = %(id)s;

    -- name: list_patients
    SELECT id
      -- a comment inside the body stays in the SQL
      FROM patients;
""")


def test_parse_reads_every_named_block_with_its_result_suffix():
    queries = parse(GOOD, "x.sql")

    assert list(queries) == ["get_patient", "get_patient_count", "delete_patient", "list_patients"]
    assert {name: q.operator for name, q in queries.items()} == {
        "get_patient": "^", "get_patient_count": "$", "delete_patient": "!", "list_patients": "",
    }
    assert all(isinstance(q, Query) for q in queries.values())


def test_comment_lines_right_after_the_name_become_the_docstring_not_sql():
    query = parse(GOOD, "x.sql")["get_patient"]

    assert query.doc == "One patient.\nParams: id."
    assert "One patient" not in query.sql


def test_comments_inside_the_body_stay_in_the_sql():
    query = parse(GOOD, "x.sql")["list_patients"]

    assert query.doc == ""
    assert "-- a comment inside the body stays in the SQL" in query.sql


def test_each_statement_is_prefixed_with_its_name_for_pg_stat_statements():
    queries = parse(GOOD, "x.sql")

    assert queries["get_patient"].sql == "/* clarity:get_patient */\nSELECT id FROM patients WHERE id = %(id)s;"
    assert queries["delete_patient"].sql.startswith("/* clarity:delete_patient */\n")


def test_each_query_records_its_source_file_and_line():
    queries = parse(GOOD, "x.sql")

    assert queries["get_patient"].source == "x.sql:3"
    assert queries["list_patients"].source == "x.sql:14"


def test_load_groups_queries_by_file_stem(tmp_path):
    (tmp_path / "patients.sql").write_text(GOOD, encoding="utf-8")
    (tmp_path / "users.sql").write_text("-- name: get_user^\nSELECT 1;\n", encoding="utf-8")

    loaded = load(tmp_path)

    assert loaded.patients.get_patient.operator == "^"
    assert loaded.users.get_user.sql == "/* clarity:get_user */\nSELECT 1;"
    assert sorted(q.name for q in all_queries(loaded)) == [
        "delete_patient", "get_patient", "get_patient_count", "get_user", "list_patients",
    ]


def test_load_refuses_a_directory_without_sql_files(tmp_path):
    with pytest.raises(QueryFileError, match="no .sql files"):
        load(tmp_path)


def test_the_project_sql_files_load():
    names = [q.name for q in all_queries(load())]

    assert "get_patient" in names
    assert len(names) == len(set(names))


@pytest.mark.parametrize("text, line, reason", [
    pytest.param("-- name: get_x^\nSELECT 1;\n\n-- name: get_y*\nSELECT 2;\n", 4, "malformed name line",
                 id="unknown-suffix"),
    pytest.param("-- name: Get-Patient\nSELECT 1;\n", 1, "malformed name line", id="bad-characters"),
    pytest.param("-- name: fetch_patient\nSELECT 1;\n", 1, "verb_noun", id="unknown-verb"),
    pytest.param("-- name: get\nSELECT 1;\n", 1, "verb_noun", id="verb-without-noun"),
    pytest.param("-- name: get_x\nSELECT 1;\n-- name: get_y\nSELECT 2;\n-- name: get_x\nSELECT 3;\n", 5,
                 "defined twice", id="duplicate-name"),
    pytest.param("-- name: get_x\nSELECT 1;\n-- name: get_x^\nSELECT 2;\n", 3, "defined twice",
                 id="duplicate-name-with-another-suffix"),
    pytest.param("-- header\nSELECT 1;\n-- name: get_x\nSELECT 2;\n", 2, "before the first",
                 id="sql-before-first-name"),
    pytest.param("-- name: get_x\n-- only a docstring\n\n-- name: get_y\nSELECT 1;\n", 1, "has no SQL",
                 id="empty-block"),
    pytest.param("-- name: get_x\nSELECT 1;\n-- name: get_y\n", 3, "has no SQL", id="empty-last-block"),
    pytest.param("-- name: get_x\nSELECT 1;\n-- name: get_y^\nSELECT id FROM t WHERE id = %s;\n", 3,
                 "positional parameter", id="positional-parameter"),
])
def test_a_malformed_file_fails_fast_naming_the_file_and_line(text, line, reason):
    with pytest.raises(QueryFileError) as raised:
        parse(text, "x.sql")

    message = str(raised.value)
    assert message.startswith(f"x.sql:{line}:"), message
    assert reason in message


def test_a_name_line_missing_its_colon_is_refused_not_merged_into_the_previous_query():
    # Otherwise get_x silently becomes "SELECT 1; -- name get_y SELECT 2;" and get_y does not exist.
    text = "-- name: get_x^\nSELECT 1;\n-- name get_y\nSELECT 2;\n"

    with pytest.raises(QueryFileError, match=r"^x\.sql:3: malformed name line"):
        parse(text, "x.sql")


def test_a_block_whose_body_is_only_commented_out_sql_is_empty():
    text = "-- name: get_x\n-- doc\n\n-- SELECT 1;\n-- name: get_y\nSELECT 1;\n"

    with pytest.raises(QueryFileError, match=r"^x\.sql:1: query 'get_x' has no SQL"):
        parse(text, "x.sql")


def test_load_names_the_offending_file(tmp_path):
    (tmp_path / "good.sql").write_text("-- name: get_x\nSELECT 1;\n", encoding="utf-8")
    (tmp_path / "broken.sql").write_text("-- name: get_y\nSELECT 1;\n-- name: get_y\nSELECT 2;\n", encoding="utf-8")

    with pytest.raises(QueryFileError, match=r"^broken\.sql:3: "):
        load(tmp_path)


def test_a_literal_percent_sign_written_as_double_percent_is_allowed():
    query = parse("-- name: list_x\nSELECT name FROM t WHERE name LIKE 'a%%' AND id = %(id)s;\n", "x.sql")["list_x"]

    assert "LIKE 'a%%'" in query.sql


def test_a_plan_custom_docstring_line_turns_off_statement_preparation():
    queries = parse("-- name: list_x\n-- Optional filters.\n-- plan: custom\nSELECT 1;\n\n-- name: get_y^\nSELECT 2;\n", "x.sql")
    assert queries["list_x"].prepare is False
    assert queries["get_y"].prepare is None


def test_plan_generic_leaves_preparation_to_psycopg_and_keeps_its_reason_as_prose():
    query = parse("-- name: get_x^\n-- One x.\n-- plan: generic\n-- The primary key finds it.\nSELECT 1;\n",
                  "x.sql")["get_x"]

    assert query.plan == "generic"
    assert query.prepare is None
    assert query.doc == "One x.\nThe primary key finds it."


@pytest.mark.parametrize("line", ["-- plan: custom", "-- plan:custom", "--plan:   custom", "  -- plan: custom  "])
def test_a_directive_is_read_by_pattern_not_as_an_exact_string(line):
    query = parse(f"-- name: list_x\n{line}\nSELECT 1;\n", "x.sql")["list_x"]

    assert query.plan == "custom"
    assert query.prepare is False
    assert query.doc == ""


@pytest.mark.parametrize("line", [
    "-- Params: id, actor_id.",
    "-- Returns: id, provider_id.",
    "-- Params: patient_id. Returns: stored, alerts_raised.",
    "-- provider: the exclusion constraint appointments_provider_id_starts_at_excl is the arbiter,",
    "-- A generic plan cannot tell a provider's scope from an admin's: custom plans.",
    "-- Planned for each execution.",
])
def test_capitalised_labels_and_lowercase_lines_of_several_words_are_prose(line):
    query = parse(f"-- name: list_x\n{line}\nSELECT 1;\n", "x.sql")["list_x"]

    assert query.plan is None
    assert query.doc == line[3:]


@pytest.mark.parametrize("text, line, reason", [
    pytest.param("-- name: list_x\n-- plan: custom plans\nSELECT 1;\n", 2, "unknown plan 'custom plans'",
                 id="value-of-several-words"),
    pytest.param("-- name: list_x\n-- plan: Custom\nSELECT 1;\n", 2, "unknown plan 'Custom'", id="value-case"),
    pytest.param("-- name: list_x\n-- plan: always\nSELECT 1;\n", 2, "unknown plan 'always'", id="unknown-value"),
    pytest.param("-- name: list_x\n-- plan:\nSELECT 1;\n", 2, "unknown plan ''", id="no-value"),
    pytest.param("-- name: list_x\n-- Plan: custom\nSELECT 1;\n", 2, "malformed directive", id="key-case"),
    pytest.param("-- name: list_x\n-- plan custom\nSELECT 1;\n", 2, "malformed directive", id="no-colon"),
    pytest.param("-- name: list_x\n-- plan = custom\nSELECT 1;\n", 2, "malformed directive", id="equals-sign"),
    pytest.param("-- name: list_x\n-- One x.\n-- plam: custom\nSELECT 1;\n", 3, "unknown directive 'plam'",
                 id="misspelt-key"),
    pytest.param("-- name: list_x\n-- prepare: never\nSELECT 1;\n", 2, "unknown directive 'prepare'",
                 id="unknown-key"),
    pytest.param("-- name: list_x\n-- plan: custom\n-- plan: generic\n-- Why.\nSELECT 1;\n", 3, "given twice",
                 id="twice"),
    pytest.param("-- name: get_x^\n-- plan: generic\nSELECT 1;\n", 2, "reason for 'plan: generic'",
                 id="generic-without-reason"),
    pytest.param("-- name: get_x^\n-- One x.\n-- plan: generic\n\n-- Why.\nSELECT 1;\n", 3,
                 "reason for 'plan: generic'", id="generic-reason-after-the-docstring"),
    pytest.param("-- name: list_x\nSELECT 1\n-- plan: custom\n;\n", 3, "outside a docstring", id="in-the-sql"),
    pytest.param("-- name: list_x\n-- One x.\n\n-- plan: custom\nSELECT 1;\n", 4, "outside a docstring",
                 id="after-a-blank-line"),
    pytest.param("-- plan: custom\n-- name: list_x\nSELECT 1;\n", 1, "outside a docstring", id="before-any-block"),
])
def test_a_directive_that_is_unknown_malformed_or_misplaced_fails_naming_the_file_and_line(text, line, reason):
    with pytest.raises(QueryFileError) as raised:
        parse(text, "x.sql")

    message = str(raised.value)
    assert message.startswith(f"x.sql:{line}:"), message
    assert reason in message


def test_sql_comments_that_are_not_directives_stay_in_the_body():
    query = parse("-- name: list_x\nSELECT 1\n-- note: kept\n;\n", "x.sql")["list_x"]

    assert "-- note: kept" in query.sql


def test_the_verbs_that_say_what_a_statement_does_are_allowed():
    text = "".join(f"-- name: {verb}_x{suffix}\nSELECT 1;\n"
                   for verb, suffix in [("set", "$"), ("lock", "$"), ("revoke", "!"), ("create", "#")])

    assert list(parse(text, "x.sql")) == ["set_x", "lock_x", "revoke_x", "create_x"]


SUFFIXED = parse(sql("""
    -- name: get_x^
    SELECT 1;

    -- name: get_y$
    SELECT 1;

    -- name: delete_x!
    DELETE FROM t;

    -- name: create_t#
    CREATE TEMP TABLE t (a int);

    -- name: list_x
    SELECT 1;

    -- name: copy_t
    COPY t (a) FROM STDIN;
"""), "x.sql")
CALLS = {
    "one": lambda q, conn: q.one(conn),
    "value": lambda q, conn: q.value(conn),
    "rowcount": lambda q, conn: q.rowcount(conn),
    "execute": lambda q, conn: q.execute(conn),
    "all": lambda q, conn: q.all(conn),
    "stream": lambda q, conn: q.stream(conn),  # also runs a query without suffix (all rows)
    "copy": lambda q, conn: q.copy(conn).__enter__(),
}


def test_the_suffix_names_the_one_method_that_runs_a_query():
    assert {name: q.method for name, q in SUFFIXED.items()} == {
        "get_x": "one", "get_y": "value", "delete_x": "rowcount", "create_t": "execute", "list_x": "all",
        "copy_t": "copy",
    }


@pytest.mark.parametrize("name, method", [
    (name, method) for name, query in SUFFIXED.items() for method in CALLS
    if method != query.method and (method, query.method) != ("stream", "all")
])
def test_running_a_query_with_another_method_fails_naming_it_before_touching_the_connection(name, method):
    query = SUFFIXED[name]

    with pytest.raises(QueryCallError) as raised:
        CALLS[method](query, object())  # no cursor(): the check comes first

    message = str(raised.value)
    assert f"query {name!r} ({query.source})" in message
    assert f"run it with .{query.method}(), not .{method}()" in message


def test_a_ddl_statement_is_never_prepared():
    assert SUFFIXED["create_t"].prepare is False


@pytest.mark.parametrize("text", [
    pytest.param("-- name: copy_t!\nCOPY t (a) FROM STDIN;\n", id="with-a-suffix"),
    pytest.param("-- name: copy_t\nINSERT INTO t VALUES (1);\n", id="not-a-copy"),
])
def test_copy_names_a_copy_statement_without_suffix(text):
    with pytest.raises(QueryFileError, match=r"^x\.sql:1: query 'copy_t': copy_ names a COPY statement"):
        parse(text, "x.sql")
