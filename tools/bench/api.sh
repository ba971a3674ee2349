#!/usr/bin/env bash
# The operator API's own figures (BENCHMARKS.md, "Operator API"): logins/s (argon2id),
# authenticated reads/s against a no-logic echo server A/B/A/B, and events/s delivered
# to 100 event-stream listeners while `trunksim calls` makes events.
#
#   tools/bench/api.sh             # all three, from target/release (it builds nothing)
#   tools/bench/api.sh login|read|events
#
# A fresh data directory and configuration under $WORK each time; the operator `bench`
# (admin) is created with a random password. The configuration raises
# api.login_attempts_per_minute (default 10 per name and per client address) so that
# the login run measures argon2id, not the rate limit; nothing else differs from the
# defaults but the addresses. The server logs at `warn` (a login logs one `info` line).
set -euo pipefail
BIN=${BIN:-target/release} WORK=${WORK:-/tmp/trunkd-api-bench}
API=http://127.0.0.1:7380 ECHO=http://127.0.0.1:7390
SECS=${SECS:-10}                  # each login and read run
READ_CLIENTS=${READ_CLIENTS:-8}   # reads in flight
LOGIN_CLIENTS=${LOGIN_CLIENTS:-4} # logins in flight
CALL_RATES=${CALL_RATES:-"125 250 500 1000"} # calls/s offered during the event runs
export TRUNKD_CONFIG=$WORK/trunkd.toml
AS=(--user bench --password-file "$WORK/password")

setup() {
  rm -rf "$WORK"; mkdir -p "$WORK"
  cat >"$TRUNKD_CONFIG" <<EOF
[link]
listen = "127.0.0.1:7310"
[api]
listen = "127.0.0.1:7380"
# for the benchmark only: the default is 10
login_attempts_per_minute = 1000000000
[database]
data_dir = "$WORK/data"
EOF
  (umask 077; head -c 18 /dev/urandom | base64 >"$WORK/password")
  local pw; pw=$(cat "$WORK/password")
  printf '%s\n%s\n' "$pw" "$pw" | "$BIN/trunkd" operator add bench --role admin >/dev/null
  # 10,000 units over 10 sites for the event runs' calls.
  "$BIN/trunksim" provision --units 10000 --sites 10 --out "$WORK/sim" >/dev/null
  "$BIN/trunkd" subscriber import "$WORK/sim/units.csv" >/dev/null
}

wait_port() { for _ in $(seq 600); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; exit 1; }
up() { RUST_LOG=warn "$BIN/trunkd" serve >>"$WORK/serve.log" 2>&1 & PID=$!; wait_port 7380; }
down() { kill -INT "$PID"; wait "$PID" 2>/dev/null || true; }
# CPU seconds (user + system) the process $1 has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
# Runs `trunksim api "$@"` while measuring server $1's CPU; prints the report and the CPU
# per answer ($2: the word the report counts them by, e.g. logins; `-`: none).
measured() {
  local pid=$1 what=$2; shift 2
  local c0 c1 out n; c0=$(cpu "$pid")
  out=$(/usr/bin/time -f 'client CPU:   %U s user + %S s system' "$BIN/trunksim" api "$@" 2>&1); c1=$(cpu "$pid")
  echo "$out"
  n=$(echo "$out" | awk -v w="$what" '$1 == w":" {print $2}')
  awk -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN {printf "server CPU:   %.2f s over the whole run", b - a
    if (n) printf ", %.1f µs per answer", (b - a) * 1e6 / n; print ""}'
}

login() {
  up; echo "== logins, $LOGIN_CLIENTS in flight, ${SECS} s"
  measured "$PID" logins login --url $API "${AS[@]}" --concurrency "$LOGIN_CLIENTS" --duration "$SECS"
  down
}

read_ab() {
  up
  "$BIN/trunksim" api echo-server --listen 127.0.0.1:7390 >/dev/null & local echo=$!
  wait_port 7390
  for round in 1 2; do
    for path in /api/v1/parameters /api/v1/sites; do
      for side in echo trunkd; do
        if [ $side = echo ]; then url=$ECHO pid=$echo; else url=$API pid=$PID; fi
        echo "== round $round $side GET $path, $READ_CLIENTS in flight, ${SECS} s"
        measured "$pid" reads read --url "$url" "${AS[@]}" --path "$path" \
          --concurrency "$READ_CLIENTS" --duration "$SECS" | grep -E "^(failed|rate|latency|server|client)"
      done
    done
  done
  kill "$echo"; wait "$echo" 2>/dev/null || true
  down
}

events() {
  # 10 sites, 25 ms holds: calls/s = 10 x Erlang / 0.025 s; each call publishes its
  # `granted` and `ended` events. The count starts once the units are registered, the
  # 100 streams have their snapshots and 10 s more have passed (the streams catch up
  # with what was published meanwhile), and ends before the calls do.
  for rate in $CALL_RATES; do
    up
    erlang=$(awk -v r="$rate" 'BEGIN {print r * 0.025 / 10}')
    "$BIN/trunksim" calls --server 127.0.0.1:7310 --dir "$WORK/sim" --erlang "$erlang" --hold-ms 25 \
      --duration 50 --private-share 1 --emergency-share 0 --move-share 0 >"$WORK/calls.$rate" &
    local calls=$!
    until grep -q offering "$WORK/calls.$rate" 2>/dev/null; do sleep 0.1; done
    echo "== events, $rate calls/s offered, 100 listeners, 15 s"
    measured "$PID" - events --url $API "${AS[@]}" --subscribers 100 --warmup 10 --duration 15
    wait "$calls"; grep -E "granted:" "$WORK/calls.$rate"
    down
  done
}

case "${1:-all}" in
login) setup; login ;;
read) setup; read_ab ;;
events) setup; events ;;
all) setup; login; read_ab; events ;;
*) sed -n '2,13p' "$0"; exit 2 ;;
esac
