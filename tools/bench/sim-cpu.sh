#!/usr/bin/env bash
# trunksim's own cost per registration (BENCHMARKS.md, "The simulator is not the
# bottleneck"): its user+system CPU (GNU time) and its write system calls (strace -c:
# write, writev, sendto, sendmsg) over a registration storm of a provisioned fleet,
# for each trunksim build given, against the same trunkd. Each run starts with no unit
# on the air (first registrations).
#
#   tools/bench/sim-cpu.sh DIR TRUNKSIM [TRUNKSIM ...]
#
# DIR holds trunkd.toml (an SQLite data_dir, the link on 127.0.0.1:7300) and the
# `trunksim provision` output in DIR/sim, imported; TRUNKD (default target/release/trunkd)
# is the server.
set -euo pipefail
DIR=$1; shift
TRUNKD=${TRUNKD:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/trunkd}
export TRUNKD_CONFIG=$DIR/trunkd.toml
UNITS=$(($(wc -l <"$DIR/sim/units.csv") - 1))
DB=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["database"]["data_dir"])' "$TRUNKD_CONFIG")/trunkd.db
PID=
trap '[ -n "$PID" ] && kill -INT "$PID" 2>/dev/null; wait 2>/dev/null || true' EXIT
fresh() {
  python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute("DELETE FROM units_on_air"); c.execute("DELETE FROM last_location"); c.commit()' "$DB"
  RUST_LOG=warn "$TRUNKD" serve >"$DIR/serve.log" 2>&1 &
  PID=$!
  for _ in $(seq 300); do (echo >/dev/tcp/127.0.0.1/7300) 2>/dev/null && break; sleep 0.1; done
  sleep 1
}
for round in 1 2; do
  for sim in "$@"; do
    fresh
    /usr/bin/time -f "%U %S" -o "$DIR/time" "$sim" register --dir "$DIR/sim" >"$DIR/out" 2>/dev/null
    read -r user sys <"$DIR/time"
    echo "round $round, $sim: $(python3 -c "print(round(($user + $sys) * 1e6 / $UNITS, 1))") us of trunksim CPU per registration (user $user s, system $sys s), $(awk '/^rate/ {print $2}' "$DIR/out") registrations/s"
    kill -INT "$PID"; wait "$PID" || true
  done
done
for sim in "$@"; do
  fresh
  strace -f -c -o "$DIR/strace" "$sim" register --dir "$DIR/sim" >/dev/null 2>&1
  echo "$sim: $(awk -v n="$UNITS" '$NF ~ /^(write|writev|sendto|sendmsg)$/ {w += $4} END {printf "%.2f", w / n}' "$DIR/strace") writes per registration"
  kill -INT "$PID"; wait "$PID" || true
done
