#!/usr/bin/env bash
# Server CPU per registration as the HLR and the VLR grow (BENCHMARKS.md, "Cost per
# frame": "server CPU per registration, 100k -> 1M units"). Three cases, in turn:
# an HLR of 100,000 units all registering; an HLR of 1,000,000 of which 100,000
# register; the same HLR with all 1,000,000 registering. The figure is the server's
# user+system CPU (from /proc) from just before the storm until its writing behind is
# done (the first second after it with at most two ticks of CPU), over the
# registrations. Each run starts with no unit on the air (first registrations).
# CPU time, not wall time: the load generator shares the cores.
#
#   tools/bench/reg-cpu.sh            # release build in target/release
#   B=/other/build tools/bench/reg-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${B:-$PWD/target/release} WORK=${WORK:-/tmp/trunkd-reg-cpu} ROUNDS=${ROUNDS:-2}
[ -n "${B_SKIP_BUILD:-}" ] || [ "$B" != "$PWD/target/release" ] || cargo build --quiet --release --workspace --bins
for n in 100000 1000000; do
  d=$WORK/$n
  [ -f "$d/data/trunkd.db" ] && continue
  mkdir -p "$d"
  printf '[link]\nlisten = "127.0.0.1:7310"\n[api]\nlisten = "127.0.0.1:7311"\n[database]\ndata_dir = "%s/data"\n' "$d" >"$d/trunkd.toml"
  TRUNKD_CONFIG=$d/trunkd.toml "$B/trunksim" provision --units "$n" --sites 100 --out "$d/sim" >/dev/null
  TRUNKD_CONFIG=$d/trunkd.toml "$B/trunkd" subscriber import "$d/sim/units.csv" >/dev/null
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for spec in "100000 100000" "1000000 100000" "1000000 1000000"; do
    set -- $spec
    d=$WORK/$1
    export TRUNKD_CONFIG=$d/trunkd.toml
    # First registrations every time: no unit on the air, no location known.
    python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute("DELETE FROM units_on_air"); c.execute("DELETE FROM last_location"); c.commit()' "$d/data/trunkd.db"
    RUST_LOG=warn "$B/trunkd" serve >"$d/serve.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do (echo >/dev/tcp/127.0.0.1/7310) 2>/dev/null && break; sleep 0.2; done
    sleep 2
    a=$(cpu $pid)
    rate=$("$B/trunksim" register --server 127.0.0.1:7310 --dir "$d/sim" --limit "$2" | awk '/^rate/ {print $2}')
    prev=$(cpu $pid)
    while sleep 1; do cur=$(cpu $pid); [ $((cur - prev)) -le 2 ] && break; prev=$cur; done
    echo "round $round: HLR $1, $2 registering: $(( (prev - a) * 1000000 / clk / $2 )) us of server CPU per registration ($rate registrations/s)"
    kill -INT $pid; wait $pid || true
  done
done
