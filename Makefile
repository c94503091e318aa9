# Clarity: `make run` serves the API, `make test` runs the suite. Both work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements-installed

.PHONY: run test fuzz bench soak-export deps postgres clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

deps: $(STAMP)

postgres: deps
	$(BIN)/python -m clarity.localpg ensure >/dev/null

run: deps postgres
	$(BIN)/python -m clarity.devserver

test: deps postgres
	$(BIN)/python -m pytest

# The property-based API test, longer than make test's bounded run.
fuzz: deps postgres
	CLARITY_FUZZ_EXAMPLES=$${CLARITY_FUZZ_EXAMPLES:-200} $(BIN)/python -m pytest tests/api/test_fuzz.py

bench: deps postgres
	$(BIN)/python -m bench.run

# One patient's FHIR export with a million readings through gunicorn: time and worker peak RSS
# (EXPORT_SOAK_READINGS sets the count).
soak-export: deps postgres
	$(BIN)/python -m bench.export_soak

# localpg.py as a script under the system Python, as .venv may be gone already; -P keeps
# clarity/ off sys.path, where a module could shadow the standard library. When a cluster
# cannot be stopped, nothing is deleted.
clean:
	$(PYTHON) -P clarity/localpg.py clean
	rm -rf .var $(VENV)
