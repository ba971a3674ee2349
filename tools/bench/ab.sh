#!/usr/bin/env bash
# Before/after benchmarks of two builds of trunkd on one machine, in one sitting
# (BENCHMARKS.md, "Issue 11: registration, core and call setup before and after").
#
#   tools/bench/ab.sh setup   # provisions an HLR per build (100,000 units, 100 sites;
#                             # 10,000 units, 10 sites for callgrind)
#   tools/bench/ab.sh wall    # A/B/A/B: register (windows 32 and 4), calls at 10,000/s
#   tools/bench/ab.sh instr   # callgrind: server instructions per registration and call
#
# A and B are folders holding `trunkd`, `trunksim` and `trunking_core` of each build
# (copied out of target/release, since both builds write the same names there).
# The load generator is B's trunksim for both, so only the server differs.
set -euo pipefail
A=${A:-/work/bench-base} B=${B:-/work/bench-head} WORK=${WORK:-/tmp/trunkd-ab}
SIM=$B/trunksim
P="--private-share 1 --emergency-share 0 --move-share 0"
dir() { [ "$1" = "$A" ] && echo "$WORK/a" || echo "$WORK/b"; }

up() { # build port [callgrind-out]
  local d; d=$(dir "$1")
  if [ -n "${3:-}" ]; then
    TRUNKD_CONFIG=$d/trunkd$2.toml RUST_LOG=warn valgrind --tool=callgrind \
      --callgrind-out-file="$3" "$1/trunkd" serve >"$3.log" 2>&1 &
  else
    TRUNKD_CONFIG=$d/trunkd$2.toml RUST_LOG=warn "$1/trunkd" serve >"$d/serve.log" 2>&1 &
  fi
  PID=$!
  for _ in $(seq 600); do (echo >"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return; sleep 0.5; done
}
down() { kill -INT "$PID"; wait "$PID" 2>/dev/null || true; }

case "${1:-}" in
setup)
  for b in "$A" "$B"; do
    d=$(dir "$b"); rm -rf "$d"; mkdir -p "$d"
    for spec in "7300 100000 100 sim data" "7301 10000 10 small small-data"; do
      set -- $spec
      printf '[link]\nlisten = "127.0.0.1:%s"\n[database]\ndata_dir = "%s/%s"\n' "$1" "$d" "$5" >"$d/trunkd$1.toml"
      TRUNKD_CONFIG=$d/trunkd$1.toml "$b/trunksim" provision --units "$2" --sites "$3" --out "$d/$4" >/dev/null
      TRUNKD_CONFIG=$d/trunkd$1.toml "$b/trunkd" subscriber import "$d/$4/units.csv" >/dev/null
    done
  done ;;
wall)
  for round in 1 2; do
    for b in "$A" "$B"; do
      d=$(dir "$b")
      for w in 32 4; do
        up "$b" 7300; echo "== round $round $b register --window $w"
        "$SIM" register --dir "$d/sim" --window "$w" | grep -E "rate|latency"; down
      done
      up "$b" 7300; echo "== round $round $b calls"
      "$SIM" calls --dir "$d/sim" --erlang 2.5 --hold-ms 25 --duration 20 $P | grep -E "granted:|request to grant"; down
    done
  done ;;
instr)
  for b in "$A" "$B"; do
    d=$(dir "$b")
    up "$b" 7301 "$d/cg.idle"; sleep 2; down
    up "$b" 7301 "$d/cg.reg"; "$SIM" register --server 127.0.0.1:7301 --dir "$d/small" --window 8 | grep accepted; down
    idle=$(grep -h Collected "$d/cg.idle.log" | awk '{print $4}'); reg=$(grep -h Collected "$d/cg.reg.log" | awk '{print $4}')
    echo "== $b instructions per registration: $(( (reg - idle) / 10000 ))"
    for round in 1 2; do
      for e in 1 2; do
        up "$b" 7301 "$d/cg.calls$e"
        "$SIM" calls --server 127.0.0.1:7301 --dir "$d/small" --erlang $e --hold-ms 100 --duration 10 $P \
          | awk '/granted:/ {print $2}' >"$d/calls$e"; down
      done
      i1=$(grep -h Collected "$d/cg.calls1.log" | awk '{print $4}'); i2=$(grep -h Collected "$d/cg.calls2.log" | awk '{print $4}')
      echo "== $b instructions per call setup, run $round: $(( (i2 - i1) / ($(cat "$d/calls2") - $(cat "$d/calls1")) ))"
    done
    for n in 1 2; do
      valgrind --tool=callgrind --callgrind-out-file="$d/cg.core$n" "$b/trunking_core" --bench \
        --sample-count 1 --sample-size $n 2>&1 | awk -v n=$n '/Collected/ {print "core", n, $4}'
    done
  done ;;
*) sed -n '2,13p' "$0"; exit 2 ;;
esac
