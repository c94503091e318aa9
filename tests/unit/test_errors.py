"""Driver errors become domain errors in one place: errors.translate, by constraint name, through
the one table errors.CONSTRAINTS. Real psycopg exception classes, with the diagnostics the server
would send (the constraint name and a message quoting the offending value)."""
import pytest
from psycopg import errors as pg
from psycopg.pq import DiagnosticField
from psycopg_pool import PoolTimeout

from clarity import errors
from clarity.errors import CONSTRAINTS, Conflict, Invalid, Unavailable

# What a constraint's name says it is (<table>_<columns>_<kind>): the driver error breaking it
# raises, and the domain error design.md §3 makes of that (409 for a duplicate, 422 otherwise).
KINDS = {
    "key": (pg.UniqueViolation, Conflict),
    "excl": (pg.ExclusionViolation, Conflict),
    "fkey": (pg.ForeignKeyViolation, Invalid),
    "check": (pg.CheckViolation, Invalid),
}


def driver_error(cls, constraint=None, message="Key (lower(email))=(grace@clarity.test) already exists."):
    info = {DiagnosticField.MESSAGE_PRIMARY: message.encode()}
    if constraint is not None:
        info[DiagnosticField.CONSTRAINT_NAME] = constraint.encode()
    return cls(message, info=info)


def kind_of(constraint):
    return KINDS[constraint.rsplit("_", 1)[1]]


@pytest.mark.parametrize("constraint", sorted(CONSTRAINTS))
def test_each_listed_constraint_translates_to_its_one_entry(constraint):
    driver_class, error_class = kind_of(constraint)
    entry = CONSTRAINTS[constraint]

    translated = errors.translate(driver_error(driver_class, constraint))

    assert type(translated) is error_class is entry.error
    assert (translated.field, translated.detail) == (entry.field, entry.detail)


@pytest.mark.parametrize("constraint", sorted(CONSTRAINTS))
def test_a_constraint_decided_without_an_error_reads_as_its_violation(constraint):
    driver_class, _ = kind_of(constraint)
    found_no_row = errors.violation(constraint)
    raised = errors.translate(driver_error(driver_class, constraint))

    assert (type(found_no_row), found_no_row.field, found_no_row.detail) == (type(raised), raised.field, raised.detail)
    assert found_no_row is not errors.violation(constraint), "each raise gets an error of its own"


@pytest.mark.parametrize("constraint", sorted(CONSTRAINTS))
def test_messages_name_the_field_never_the_value(constraint):
    driver_class, _ = kind_of(constraint)
    translated = errors.translate(driver_error(driver_class, constraint, "Key (x)=(secret-value-42) conflicts."))

    assert "secret" not in translated.detail and "42" not in translated.detail
    assert translated.field and "Key" not in translated.detail


def test_the_double_booking_and_amendment_messages_clients_see_are_kept():
    assert errors.violation("appointments_provider_id_starts_at_excl").detail == (
        "The provider already has an appointment at this time.")
    assert errors.violation("medical_records_amends_id_key").detail == (
        "That record has already been amended; amend its latest version.")
    assert errors.violation("medical_records_amends_id_fkey").detail == (
        "amends_id must name a record of the same patient and type.")
    assert [errors.violation(name).field for name in ("appointments_provider_id_starts_at_excl",
                                                      "medical_records_amends_id_key",
                                                      "medical_records_amends_id_fkey")] == [
        "starts_at", "amends_id", "amends_id"]


@pytest.mark.parametrize("driver_class, error_class, detail", [
    (pg.UniqueViolation, Conflict, "Another record already has this value."),
    (pg.ExclusionViolation, Conflict, "This value overlaps another record."),
    (pg.ForeignKeyViolation, Invalid, "A referenced record does not exist."),
    (pg.CheckViolation, Invalid, "A value is not allowed."),
])
def test_an_unlisted_constraint_is_translated_by_its_kind_naming_no_field(driver_class, error_class, detail):
    translated = errors.translate(driver_error(driver_class, "some_table_some_column_key"))

    assert type(translated) is error_class
    assert (translated.field, translated.detail) == (None, detail)


def test_a_not_null_violation_has_no_constraint_name_and_is_invalid():
    translated = errors.translate(driver_error(pg.NotNullViolation, None, 'null value in column "email"'))

    assert type(translated) is Invalid and translated.field is None


def test_an_unknown_constraint_name_is_a_programming_error_for_violation():
    with pytest.raises(KeyError):
        errors.violation("appointments_no_such_constraint_excl")


@pytest.mark.parametrize("exc, error_class", [
    (PoolTimeout("no connection"), Unavailable),
    (pg.QueryCanceled("canceling statement due to statement timeout"), Unavailable),
    (pg.NumericValueOutOfRange("out of range"), Invalid),
])
def test_other_driver_errors_keep_their_translation(exc, error_class):
    assert type(errors.translate(exc)) is error_class


@pytest.mark.parametrize("exc", [ValueError("not ours"), pg.UndefinedTable("relation does not exist")])
def test_errors_that_are_not_ours_to_translate_are_none(exc):
    assert errors.translate(exc) is None
