"""Property-based API testing: schemathesis generates valid and invalid requests for every
operation of the OpenAPI document and checks the answers against it (no 5xx, documented status
codes, content types, headers and response schemas, 401 without a token).

``make test`` runs a bounded number of examples per operation and mode; ``make fuzz`` sets
CLARITY_FUZZ_EXAMPLES higher for a longer run.
"""
from __future__ import annotations

import functools
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation import GenerationMode

from clarity import create_app
from clarity.config import Settings
from clarity.security.access import new_token

EXAMPLES = int(os.environ.get("CLARITY_FUZZ_EXAMPLES", "10"))
# Operations that end the caller's own session get a throwaway one for every call, so the
# fuzzer never signs itself out.
SELF_ENDING = {("DELETE", "/api/v1/auth/tokens/current"), ("POST", "/api/v1/users/me/password"),
               ("DELETE", "/api/v1/auth/sessions/{session_id}")}

# Rules across requests or roles that a JSON schema cannot state: a schema-valid request may
# break them, and is then answered 422 (still checked: problem details, as documented).
BUSINESS_RULES = {
    ("POST", "/api/v1/auth/tokens"): "a malformed email is refused (422) and counted",
    ("POST", "/api/v1/users/me/password"): "current_password must be the caller's password",
    ("POST", "/api/v1/users"): "the email must be deliverable-looking (marshmallow's Email)",
    ("POST", "/api/v1/patients"): "an admin names an active provider; a provider registers their own; "
                                  "a date of birth between 1850 and today",
    ("PATCH", "/api/v1/patients/{patient_id}"): "a date of birth between 1850 and today",
    ("POST", "/api/v1/patients/{patient_id}/biometrics"): "each kind has one unit and a plausible range",
    ("PUT", "/api/v1/alert-rules/{kind}"): "min_value must be below max_value, in the kind's range",
    ("PUT", "/api/v1/patients/{patient_id}/alert-rules/{kind}"): "min_value below max_value, in range",
    ("POST", "/api/v1/patients/{patient_id}/appointments"): "ends_at after starts_at, in the future",
    ("PATCH", "/api/v1/appointments/{appointment_id}"): "ends_at after starts_at, in the future",
    ("POST", "/api/v1/patients/{patient_id}/records"): "amends_id names the latest record of that type",
    ("POST", "/api/v1/patients/{patient_id}/documents"): "the first bytes are of the declared media type; "
                                                          "Content-Disposition (RFC 6266/8187) and Document-Title "
                                                          "(percent-encoded UTF-8) decode to a name and a title",
    ("GET", "/api/v1/appointments"): "the schedule window spans at most 31 days",
    ("PUT", "/api/v1/patients/{patient_id}/digital-twin"): "parameter names are snake_case (propertyNames, "
                                                            "which OpenAPI 3.0 cannot state)",
}

pytestmark = pytest.mark.slow


def _operations() -> list[tuple[str, str]]:
    """Every operation of the document, read from an app that needs no database for it."""
    document = create_app(Settings(env="test")).test_client().get("/api/v1/openapi.json").get_json()
    return [(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method in ("get", "put", "post", "patch", "delete")]


@pytest.fixture
def callers(app, make_staff):
    """An admin and a provider with their tokens, and a way to mint throwaway tokens."""
    db = app.extensions["clarity"].db
    staff = {"admin": make_staff("admin"), "provider": make_staff("provider")}

    def token(role: str, throwaway: bool) -> str:
        if not throwaway:
            return staff[role].token

        def work(uow):
            fresh, digest = new_token()
            uow.tokens.add(user_id=staff[role].id, token_hash=digest, max_age_seconds=600, client_addr=None)
            return fresh
        return db.run(work)

    return token


@pytest.mark.parametrize("method, path", _operations())
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_every_operation_conforms_to_the_document(app, callers, method, path, mode):
    operation = _operation(app, method, path)
    throwaway = (method, path) in SELF_ENDING

    # A cursor is opaque: only the server makes valid ones, so generated ones are all forged
    # (400); tests/api/test_rest_conventions.py and the pagination tests cover those. An
    # Idempotency-Key means something only across requests (the same key with another body is
    # 422): tests/api/test_idempotency.py covers it.
    strategy = operation.as_strategy(generation_mode=mode).map(_without_cursor)
    semantic = (method, path) in BUSINESS_RULES

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        for role in ("admin", "provider"):
            _authorize(case, callers(role, throwaway))
            if not semantic:
                case.call_and_validate()
                continue
            response = case.call()
            case.validate_response(response, excluded_checks=[positive_data_acceptance])
            if response.status_code == 422:
                problem = response.json()
                assert problem["status"] == 422 and problem["title"] and problem["detail"], problem

    check()


def _operation(app, method, path):
    schema = _schema(app)
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() == method and operation.path == path:
            return operation
    raise AssertionError(f"{method} {path} is not in the document")


@functools.lru_cache(maxsize=1)
def _schema(app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


def _without_cursor(case):
    for part in (case.query, case.body):
        if isinstance(part, dict):
            part.pop("cursor", None)
    if case.headers:
        case.headers.pop("Idempotency-Key", None)
    return case


def _authorize(case, token: str) -> None:
    """Sign the case in as schemathesis's own auth providers do (apply_basic_auth): on the case,
    marked explicit, so the ignored-auth check replays it without the token and with a forged
    one and expects 401."""
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    case._has_explicit_auth = True
