# Quick start: `make serve` runs the service, `make test` runs the whole suite.
# Both create .venv and install the project into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test fast lint bench postgres chromium oauth-server sandbox constraints

# Installs the versions the suite last passed with (constraints.txt), within pyproject's ranges.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Refresh constraints.txt: the newest releases pyproject.toml allows, installed into a scratch
# venv and frozen. Then `make test` (which reinstalls from it) and commit it if green.
CONSTRAINTS_VENV := build/constraints-venv
constraints:
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/pip install --quiet --upgrade pip
	$(CONSTRAINTS_VENV)/bin/pip install --quiet '.[dev]'
	(echo '# The versions `make` installs (pip -c), refreshed by `make constraints`.'; \
		$(CONSTRAINTS_VENV)/bin/pip freeze --exclude spine-cds) > constraints.txt
	rm -rf $(CONSTRAINTS_VENV)

# Try-it mode: authentication off (logged at start-up) so curl works without a JWT, and the
# committee dashboard (/admin) opens with the token `try-it`. In production run
# `cds-service serve` without CDS_AUTH_DISABLED, with a secret CDS_ADMIN_TOKEN.
serve: $(STAMP)
	CDS_AUTH_DISABLED=true CDS_ADMIN_TOKEN=$${CDS_ADMIN_TOKEN:-try-it} \
		$(BIN)/cds-service serve --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The suite also runs against a real PostgreSQL server that it starts itself; install the
# Debian binaries when they are missing (needs root, as on the project's machines).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)

# The playground test drives Debian's Chromium through Playwright.
chromium:
	@command -v chromium >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# The SMART launch test plays the EHR's authorization server with oauth2-mock-server (npm,
# pinned in tests/smart/package-lock.json); install Debian's node and npm when missing.
oauth-server: tests/smart/node_modules/.package-lock.json

tests/smart/node_modules/.package-lock.json: tests/smart/package-lock.json
	@command -v npm >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null)
	npm ci --prefix tests/smart --silent --no-audit --no-fund

# The CDS Hooks sandbox itself (cds-hooks/sandbox @ 3b7e255, Apache-2.0), vendored as its git
# archive, built with its own package-lock and webpack configuration for the test that runs it in
# Chromium against the service (tests/test_sandbox_app.py; tests/sandbox/README.md). About three
# minutes the first time (npm ci of 1,455 packages, then webpack); nothing after.
SANDBOX_ARCHIVE := tests/sandbox/cds-hooks-sandbox-3b7e255.tar.gz
SANDBOX_DIR := tests/sandbox/build/cds-hooks-sandbox
sandbox: $(SANDBOX_DIR)/build/app.bundle.js

$(SANDBOX_DIR)/build/app.bundle.js: $(SANDBOX_ARCHIVE)
	@command -v npm >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null)
	rm -rf $(SANDBOX_DIR)
	mkdir -p $(dir $(SANDBOX_DIR))
	tar -xzf $(SANDBOX_ARCHIVE) -C $(dir $(SANDBOX_DIR))
	cd $(SANDBOX_DIR) && npm ci --silent --no-audit --no-fund --ignore-scripts
	cd $(SANDBOX_DIR) && (npx --no-install webpack --config webpack.config.prod.js \
		>webpack.log 2>&1 || (cat webpack.log; exit 1))

test: lint postgres chromium oauth-server sandbox
	$(BIN)/pytest

fast: $(STAMP)
	$(BIN)/pytest -m "not slow" -q

bench: $(STAMP)
	$(BIN)/python bench/bench.py
