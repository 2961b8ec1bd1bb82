# Roster — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
STORE ?= ./data
LISTEN ?= 127.0.0.1:8080

.PHONY: run test test-deps console-screenshots build check fmt clippy bench bench-quick schemas clean

## Run the server on the embedded store under ./data (no other service needed).
run:
	$(CARGO) run --release -p roster-cli --bin roster -- serve --store $(STORE) --listen $(LISTEN)

## Run the whole test suite (unit, property, crash, contract, end-to-end and the console's
## browser tests). Installs what the tests need (nats-server, Chromium and ChromeDriver, from
## Debian's packages) if it is missing; the tests start their own servers on free ports.
test: test-deps
	$(CARGO) test --workspace --all-targets

## Debian's packages only: nothing downloads a browser or a driver of its own. Fails (and
## `make test` with it) when they cannot be installed: the browser tests never skip.
test-deps:
	@missing=""; \
	command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing="$$missing nats-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (Debian packages)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing \
			|| { echo "could not install$$missing: the tests need them (apt-get install$$missing)" >&2; exit 1; }; \
	fi

## Screenshots of every console page into docs/console/ (the browser tests write them).
console-screenshots: test-deps
	ROSTER_CONSOLE_SCREENSHOTS=docs/console $(CARGO) test -p roster-tests --test api -- console:: --test-threads 1

build:
	$(CARGO) build --release -p roster-cli

## What CI and every commit must pass besides the tests.
check: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Performance suite (ops/bench, docs/bench.md): Roster vs an axum JSON echo (the ceiling) vs
## axum + PostgreSQL (the baseline, when 127.0.0.1:5432 answers), at c=64. Prints the table and
## writes bench/results.json, bench/results.txt and bench/chart.svg. Full: 100k/1M users, under
## 15 min on 2 cores; quick: counts scaled down, under 2 min, written to bench/out/quick/.
bench:
	$(CARGO) build --release -p roster-cli -p roster-bench
	$(CARGO) run --release -q -p roster-bench --bin roster-bench -- --out bench

bench-quick:
	$(CARGO) build --release -p roster-cli -p roster-bench
	$(CARGO) run --release -q -p roster-bench --bin roster-bench -- --quick --out bench/out/quick

## Regenerate schemas/ (JSON Schemas of every event, command and read model, and the OpenAPI
## document) from the types. `make test` fails while the committed files are stale.
schemas:
	ROSTER_WRITE_SCHEMAS=1 $(CARGO) test -q -p roster-api --lib -- schemas::tests::committed_schemas_are_current

clean:
	$(CARGO) clean

.PHONY: cluster bench-nats

## Scaling out: a local 3-node JetStream cluster from ops/nats/cluster/ and two Roster servers
## sharing it on 127.0.0.1:8081 and :8082 (state under data/cluster/). Ctrl-C stops everything.
cluster: test-deps build
	ops/cluster.sh

## Create-user throughput through `roster serve` on NATS (single node, 3-node cluster) as a
## ratio to raw JetStream publish+ack of same-sized messages; BENCH_SECONDS per measurement.
BENCH_SECONDS ?= 10
bench-nats: test-deps build
	$(CARGO) run --release -p roster-cli --example nats_scaleout_bench -- $(BENCH_SECONDS) 64
