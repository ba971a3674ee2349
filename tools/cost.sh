#!/usr/bin/env bash
# The server's cost per procedure, in instructions counted by callgrind (which the
# machine's noise cannot move): instructions per first registration and per call, and
# the functions they go to. BENCHMARKS.md, "Cost per frame", records its output.
#
#   tools/cost.sh                 # 2,000 units on 10 sites, then 2,000 calls
#   UNITS=5000 CALLS=5000 TOP=30 tools/cost.sh
#   TRUNKD=/other/build/trunkd tools/cost.sh   # another build of trunkd (nothing built;
#                                              # TRUNKSIM likewise)
#   TLS=1 tools/cost.sh           # the link over TLS 1.3 (a P-256 certificate from openssl)
#
# It builds trunkd and trunksim (`--profile cost`: release with line tables), provisions
# a fresh SQLite HLR in a temporary directory, starts `trunkd serve` under callgrind and
# runs `trunksim cost` against it: every unit registers (by IMEI: REG_REQUEST,
# AUTH_CHALLENGE, AUTH_RESPONSE, REG_ACCEPT), then CALLS group calls (request and grant,
# PTT_RELEASE and ACK, CALL_END both ways), one procedure at a time, with callgrind's
# counters zeroed before each phase and dumped after it. Everything the server does
# while a phase runs counts: its timers too.
set -euo pipefail
UNITS=${UNITS:-2000} SITES=${SITES:-10} CALLS=${CALLS:-2000} TOP=${TOP:-15}
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "cost.sh needs valgrind (apt-get install valgrind)" >&2; exit 2; }
if [ -z "${TRUNKD:-}" ]; then
  cargo build --quiet --profile cost --workspace --bins
fi
BIN=${CARGO_TARGET_DIR:-$PWD/target}/cost
TRUNKD=${TRUNKD:-$BIN/trunkd} TRUNKSIM=${TRUNKSIM:-$BIN/trunksim}
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill -INT "$PID" 2>/dev/null; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
API=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TLS_LINK= TLS_ARGS=()
if [ -n "${TLS:-}" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
    -keyout "$WORK/link.key" -out "$WORK/link.crt" 2>/dev/null
  TLS_LINK=$(printf 'tls_cert = "%s/link.crt"\ntls_key = "%s/link.key"\n' "$WORK" "$WORK")
  TLS_ARGS=(--tls-ca "$WORK/link.crt" --tls-name localhost)
fi
printf '[link]\nlisten = "127.0.0.1:%s"\n%s\n[api]\nlisten = "127.0.0.1:%s"\n[database]\ndata_dir = "%s/data"\n' \
  "$PORT" "$TLS_LINK" "$API" "$WORK" >"$WORK/trunkd.toml"
export TRUNKD_CONFIG=$WORK/trunkd.toml RUST_LOG=warn
"$TRUNKSIM" provision --units "$UNITS" --sites "$SITES" --out "$WORK/sim" >/dev/null
"$TRUNKD" subscriber import "$WORK/sim/units.csv" >/dev/null
valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$TRUNKD" serve >"$WORK/serve.log" 2>&1 &
PID=$!
"$TRUNKSIM" cost --dir "$WORK/sim" --server "127.0.0.1:$PORT" --calls "$CALLS" --callgrind "$PID" "${TLS_ARGS[@]}" >"$WORK/cost.out"
kill -INT "$PID"; wait "$PID" 2>/dev/null || true; PID=
val() { awk -v k="$1:" '$1 == k {print $2}' "$WORK/cost.out"; }
# The dumps: one per phase, in order (the last file is the run's end).
mapfile -t dumps < <(ls "$WORK"/cg.out.* | sort -V)
total() { awk '/^summary:|^totals:/ {print $2; exit}' "$1"; }
idle_ir=$(total "${dumps[2]}")
if [ "$TRUNKD" = "$BIN/trunkd" ]; then
  build="trunkd $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+changes')"
else
  build=$TRUNKD
fi
echo "$build; $UNITS units on $SITES sites, $CALLS calls${TLS:+, link over TLS 1.3}"
echo "idle: $idle_ir instructions in $(val idle_s) s (timers), subtracted below for each phase's length"
i=0
for phase in register calls; do
  file=${dumps[$i]}; i=$((i + 1))
  ir=$(total "$file")
  if [ "$phase" = register ]; then n=$(val registrations) what=registration; else n=$(val calls) what=call; fi
  net=$(awk -v ir="$ir" -v idle="$idle_ir" -v is="$(val idle_s)" -v s="$(val "${phase}_s")" -v n="$n" \
    'BEGIN { printf "%d", (ir - idle / is * s) / n }')
  echo
  echo "== $phase: $n in $(val "${phase}_s") s, $ir instructions: $(( ir / n )) per $what, $net less the timers"
  # Functions still on the stack when a phase is zeroed and dumped (a thread's start,
  # the runtime's loop) show much of the phase as their own: left out (no function's
  # own cost comes near a quarter of a phase).
  callgrind_annotate --inclusive=no --threshold=100 "$file" 2>/dev/null | awk -v top="$TOP" -v ir="$ir" '
    /^-+$/ { sep++; next }
    sep == 6 && NF >= 2 { n = $1; gsub(",", "", n); if (n + 0 < ir / 4 && shown < top) { print "  " $0; shown++ } }' |
    sed -e 's|[^ ]*/registry/src/[^/]*/||; s|/rustc/[0-9a-f]*/library/||; s| \[/[^]]*\]$||'
done
