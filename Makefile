# The two set-up commands of the README. Each installs what it needs on a fresh machine.
UV ?= python3 -m uv
APT_TEST_PACKAGES = docker-compose chromium

.PHONY: up test lint uv sync system-test-deps bento

uv:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

sync: uv
	$(UV) sync --frozen

## Start the whole stack: ml-api :8001 + backend :8000 with embedded Qdrant under ./data.
up: sync
	$(UV) run ragctl up

## Run the test suite (installs the Debian tools some tests need when missing).
test: sync system-test-deps
	$(UV) run ruff check .
	$(UV) run pytest

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
