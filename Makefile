# Roster — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
STORE ?= ./data
LISTEN ?= 127.0.0.1:8080

.PHONY: run test test-deps build check fmt clippy bench bench-quick schemas clean

## Run the server on the embedded store under ./data (no other service needed).
run:
	$(CARGO) run --release -p roster-cli --bin roster -- serve --store $(STORE) --listen $(LISTEN)

## Run the whole test suite (unit, property, crash, contract and end-to-end tests).
## Installs what the tests need (nats-server, from Debian's packages) if it is missing; the
## tests start their own servers on free ports.
test: test-deps
	$(CARGO) test --workspace --all-targets

test-deps:
	@if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then \
		echo "installing nats-server (Debian package)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nats-server; \
	fi

build:
	$(CARGO) build --release -p roster-cli

## What CI and every commit must pass besides the tests.
check: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
