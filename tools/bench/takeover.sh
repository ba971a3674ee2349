#!/usr/bin/env bash
# The HA pair's takeover figures (BENCHMARKS.md, "Takeover"): two trunkd nodes on one
# PostgreSQL database, 100 gateways holding both link addresses, 100,000 units
# registered, a steady call load; then the active node is killed (`kill -9`), or cut
# off from the database without dying (its database connections run through
# `trunksim db-proxy`, which SIGUSR1 silences). `trunksim takeover` reports from the
# fault: a node active again, every site linked to it, each site's first grant, and
# the requests refused or unanswered on the way.
#
#   tools/bench/takeover.sh            # both faults, from target/release (builds nothing)
#   tools/bench/takeover.sh kill|cut
#
# PG_URL (default postgres://postgres@127.0.0.1:5432) must allow creating the database
# trunkd_takeover_bench, which is dropped and created afresh. Default settings
# everywhere (ha.lease_ms 2000) but the addresses; nodes log at `info` to $WORK.
set -euo pipefail
BIN=${BIN:-target/release} WORK=${WORK:-/tmp/trunkd-takeover-bench}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432} DB=trunkd_takeover_bench
UNITS=${UNITS:-100000} SITES=${SITES:-100} RATE=${RATE:-1} AFTER=${AFTER:-10}

node_config() { # name link api database-url
  cat >"$WORK/$1.toml" <<EOF2
[link]
listen = "127.0.0.1:$2"
[api]
listen = "127.0.0.1:$3"
[database]
url = "$4"
[ha]
enabled = true
node_id = "$1"
EOF2
}

setup() {
  rm -rf "$WORK"; mkdir -p "$WORK"
  psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
  node_config a 7300 7380 "$PG_URL/$DB"
  node_config b 7301 7381 "$PG_URL/$DB"
  node_config a-proxied 7300 7380 "postgres://postgres@127.0.0.1:15432/$DB"
  "$BIN/trunkd" --config "$WORK/a.toml" migrate >/dev/null 2>&1 || true
  TRUNKD_CONFIG=$WORK/a.toml "$BIN/trunksim" provision --units "$UNITS" --sites "$SITES" --out "$WORK/sim" >/dev/null
  "$BIN/trunkd" --config "$WORK/a.toml" subscriber import "$WORK/sim/units.csv" >/dev/null
}

role() { curl -s "http://127.0.0.1:$1/healthz" | sed -n 's/.*"role":"\([a-z]*\)".*/\1/p'; }
wait_role() { for _ in $(seq 600); do [ "$(role "$1")" = "$2" ] && return; sleep 0.1; done; echo "node on $1 never $2" >&2; exit 1; }
start() { # config api role
  RUST_LOG=info "$BIN/trunkd" --config "$WORK/$1.toml" serve >>"$WORK/$1.log" 2>&1 & PID=$!
  wait_role "$2" "$3"
}
stop_all() { pkill -f "trunkd --config $WORK" 2>/dev/null || true; pkill -f "trunksim db-proxy" 2>/dev/null || true; sleep 1; }

run() { # fault
  "$BIN/trunksim" takeover --dir "$WORK/sim" --server 127.0.0.1:7300,127.0.0.1:7301 \
    --api 127.0.0.1:7380,127.0.0.1:7381 --rate "$RATE" --after "$AFTER" --fault "$1"
}

kill9() {
  stop_all
  start a 7380 active; local a=$PID
  start b 7381 standby
  echo "== kill -9 of the active node ($UNITS units, $SITES sites, $RATE call requests/s per site)"
  run "kill -9 $a"
  stop_all
}

cut() {
  stop_all
  "$BIN/trunksim" db-proxy --listen 127.0.0.1:15432 >/dev/null 2>"$WORK/proxy.log" & local proxy=$!
  sleep 0.5
  start a-proxied 7380 active
  start b 7381 standby
  echo "== the active node cut off from the database ($UNITS units, $SITES sites, $RATE call requests/s per site)"
  run "kill -USR1 $proxy"
  stop_all
}

setup
case ${1:-all} in
  kill) kill9 ;;
  cut) cut ;;
  all) kill9; cut ;;
  *) echo "usage: $0 [kill|cut]" >&2; exit 2 ;;
esac
