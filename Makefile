# The two set-up commands of the README. Each installs what it needs on a fresh machine.
UV ?= python3 -m uv
APT_TEST_PACKAGES = docker-compose chromium

.PHONY: up test lint audit uv sync system-test-deps bento

uv:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

sync: uv
	$(UV) sync --frozen

## Start the whole stack: ml-api :8001 + backend :8000 with embedded Qdrant under ./data.
up: sync
	$(UV) run ragctl up

## Run the test suite (installs the Debian tools some tests need when missing).
test: sync system-test-deps audit
	$(UV) run ruff check .
	$(UV) run pytest

## Known vulnerabilities in the locked service dependencies (OSV). Fails on a finding; says so
## and goes on when the vulnerability database cannot be reached (offline machines).
audit: uv
	@out=$$($(UV) audit --frozen --no-dev --preview-features audit-command 2>&1); code=$$?; \
	if [ $$code -eq 0 ]; then echo "audit: no known vulnerabilities"; \
	elif echo "$$out" | grep -qiE "error sending request|dns error|connect"; then \
	  echo "audit: skipped, the vulnerability database (OSV) is unreachable from here"; \
	else echo "$$out"; exit $$code; fi

system-test-deps:
	@missing=""; \
	for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: sync
	$(UV) run ruff check . && $(UV) run ruff format --check .

## Build the ml-api bento (needs the models imported: `uv run ragctl models import-defaults`).
bento: sync
	$(UV) run bentoml build
