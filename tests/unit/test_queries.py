"""The SQL loader: named blocks become Query objects; a malformed file fails fast, naming file and line."""
from __future__ import annotations

import textwrap

import pytest

from clarity.queries import Query, QueryFileError, all_queries, load, parse


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
