#!/usr/bin/env bash
# The benchmark suite (BENCHMARKS.md, "The benchmark suite"): trunkd's headline figures
# as fractions of what the same machine's loopback path carries with no logic at all
# (tools/echo-limit), measured in the same run, A/B/A/B, so that noise hits both.
#
#   tools/bench.sh              # builds in release mode, measures, rewrites the suite's
#                               # section of BENCHMARKS.md
#   ROUNDS=1 UNITS=20000 tools/bench.sh   # quicker, smaller
#   NO_WRITE=1 tools/bench.sh   # prints the section instead of writing it
#
# Each round, for each backend (SQLite; PostgreSQL too when one answers at PG_URL):
#   1. registrations: `trunksim register` (window 32 per gateway) against trunkd on a
#      fresh copy of the provisioned HLR, then `echo-limit client --pattern register`
#      (closed loop, window 32 per link) against the echo server: the batched echo limit;
#   2. call setups, as many as trunkd grants: `trunksim calls` offered RATE_MAX calls/s
#      (private calls, 10 ms holds), then the echo pair closed loop;
#   3. call setups at RATE calls/s (10,000): `trunksim calls` against trunkd, with the
#      server's own p99 from its /metrics, then `echo-limit client --rate` at the same rate.
# trunkd and its load generator share the machine's cores, as every figure here does.
set -euo pipefail
cd "$(dirname "$0")/.."
UNITS=${UNITS:-100000} SITES=${SITES:-100} ROUNDS=${ROUNDS:-2} DURATION=${DURATION:-10}
RATE=${RATE:-10000} RATE_MAX=${RATE_MAX:-40000}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
WORK=${WORK:-$(mktemp -d)}
cargo build --quiet --release --workspace --bins
B=$PWD/target/release
LINK=127.0.0.1:7350 API=127.0.0.1:7351 ECHO=127.0.0.1:7352
PID=
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1200); do (echo >"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return; sleep 0.1; done; echo "nothing on $1" >&2; exit 1; }

# provision BACKEND: the HLR, once, and its pristine copy (SQLite) or dump (PostgreSQL).
provision() {
  local d=$WORK/$1
  mkdir -p "$d"
  if [ "$1" = sqlite ]; then
    printf '[link]\nlisten = "%s"\n[api]\nlisten = "%s"\n[database]\ndata_dir = "%s/data"\n' "$LINK" "$API" "$d" >"$d/trunkd.toml"
  else
    psql "$PG_URL" -qc "DROP DATABASE IF EXISTS trunkd_bench" -c "CREATE DATABASE trunkd_bench" >/dev/null
    printf '[link]\nlisten = "%s"\n[api]\nlisten = "%s"\n[database]\nurl = "%s"\ndata_dir = "%s/data"\n' \
      "$LINK" "$API" "${PG_URL%/*}/trunkd_bench" "$d" >"$d/trunkd.toml"
  fi
  TRUNKD_CONFIG=$d/trunkd.toml "$B/trunksim" provision --units "$UNITS" --sites "$SITES" --out "$d/sim" >/dev/null
  TRUNKD_CONFIG=$d/trunkd.toml "$B/trunkd" subscriber import "$d/sim/units.csv" >/dev/null
  if [ "$1" = sqlite ]; then
    cp -r "$d/data" "$d/pristine"
  else
    psql "$PG_URL" -qc "DROP DATABASE IF EXISTS trunkd_bench_pristine" \
      -c "CREATE DATABASE trunkd_bench_pristine TEMPLATE trunkd_bench" >/dev/null
  fi
}

# up BACKEND: trunkd on a fresh copy of the provisioned HLR.
up() {
  local d=$WORK/$1
  if [ "$1" = sqlite ]; then
    rm -rf "$d/data"; cp -r "$d/pristine" "$d/data"
  else
    psql "$PG_URL" -qc "DROP DATABASE IF EXISTS trunkd_bench" \
      -c "CREATE DATABASE trunkd_bench TEMPLATE trunkd_bench_pristine" >/dev/null
  fi
  TRUNKD_CONFIG=$d/trunkd.toml RUST_LOG=warn "$B/trunkd" serve >"$d/serve.log" 2>&1 &
  PID=$!
  wait_port "$LINK"; wait_port "$API"
}
down() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
echo_up() { "$B/echo-limit" server --listen "$ECHO" >/dev/null 2>&1 & PID=$!; wait_port "$ECHO"; }

P="--private-share 1 --emergency-share 0 --move-share 0 --quiet"
run_backend() { # BACKEND ROUND
  local d=$WORK/$1 r=$2 out=$WORK/results/$1.$2
  mkdir -p "$out"
  echo "== $1, round $r" >&2
  up "$1"
  "$B/trunksim" register --quiet --dir "$d/sim" --server "$LINK" --api "$API" --json "$out/register.json" >/dev/null
  down
  echo_up
  "$B/echo-limit" client --server "$ECHO" --pattern register --links "$SITES" --window 32 --duration "$DURATION" --json "$out/echo-register.json" >/dev/null
  down
  # RATE_MAX offered: 4 Erlang per site of holds of 4e6 / RATE_MAX * SITES / 100 ms.
  up "$1"
  "$B/trunksim" calls --dir "$d/sim" --server "$LINK" --api "$API" $P --duration "$DURATION" \
    --erlang 4 --hold-ms "$(( 4000 * SITES / RATE_MAX ))" --json "$out/calls-max.json" >/dev/null
  down
  echo_up
  "$B/echo-limit" client --server "$ECHO" --pattern calls --links "$SITES" --window 32 --duration "$DURATION" --json "$out/echo-calls-max.json" >/dev/null
  down
  up "$1"
  "$B/trunksim" calls --dir "$d/sim" --server "$LINK" --api "$API" $P --duration "$DURATION" \
    --erlang 2 --hold-ms "$(( 2000 * SITES / RATE ))" --json "$out/calls-rate.json" >/dev/null
  down
  echo_up
  "$B/echo-limit" client --server "$ECHO" --pattern calls --links "$SITES" --rate "$RATE" --duration "$DURATION" --json "$out/echo-calls-rate.json" >/dev/null
  down
}

backends=(sqlite)
if command -v psql >/dev/null && psql "$PG_URL" -qAtc "SELECT 1" >/dev/null 2>&1; then
  backends+=(postgres)
else
  echo "PostgreSQL not reachable at $PG_URL: SQLite only" >&2
fi
for b in "${backends[@]}"; do provision "$b"; done
for r in $(seq "$ROUNDS"); do
  for b in "${backends[@]}"; do run_backend "$b" "$r"; done
done

section=$(python3 tools/bench_report.py "$WORK/results" \
  "tools/bench.sh (UNITS=$UNITS SITES=$SITES ROUNDS=$ROUNDS DURATION=$DURATION RATE=$RATE RATE_MAX=$RATE_MAX)" \
  "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(git rev-parse --short HEAD)")
if [ -n "${NO_WRITE:-}" ]; then
  echo "$section"
else
  python3 - "$section" <<'PY'
import re, sys
section = sys.argv[1].strip() + "\n"
text = open("BENCHMARKS.md").read()
begin, end = "<!-- tools/bench.sh: begin -->\n", "<!-- tools/bench.sh: end -->\n"
if begin in text and end in text:
    text = text[: text.index(begin) + len(begin)] + section + text[text.index(end):]
else:
    text = text.rstrip("\n") + "\n\n" + begin + section + end
open("BENCHMARKS.md", "w").write(text)
PY
  echo "BENCHMARKS.md: the suite's section rewritten" >&2
fi
