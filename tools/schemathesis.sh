#!/usr/bin/env bash
# Runs schemathesis against a real `trunkd serve`, from the served OpenAPI document
# (GET /api/v1/openapi.json), after checking the document with openapi-spec-validator.
# No request may get a 5xx; every answer must be as documented (status, content type,
# headers, body); every request the document says is malformed must get a 4xx; no route
# that needs a token may answer without one. Bounded in examples and time: about a
# minute.
#
#   tools/schemathesis.sh [path/to/trunkd]     # default: builds target/debug/trunkd
#
# schemathesis (4.x) and openapi-spec-validator, from PyPI, are installed into a
# virtualenv under target/ on first use. trunkd runs on a temporary SQLite data
# directory and free loopback ports, with an admin `schemathesis`, a site, a fleet and a
# subscriber, and is stopped at the end whatever happens. Environment: ST_MAX_EXAMPLES
# (per operation, default 50), ST_TIMEOUT (seconds each of the two runs may take at
# most, default 150), ST_SEED (default 1), ST_CHECKS (schemathesis's --checks), ST_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples=${ST_MAX_EXAMPLES:-50}
budget=${ST_TIMEOUT:-150}
venv=$(realpath -m "${ST_VENV:-target/schemathesis-venv}")

if ! [ -x "$venv/bin/schemathesis" ] || ! [ -x "$venv/bin/openapi-spec-validator" ]; then
  echo "installing schemathesis into $venv"
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.*' \
    'openapi-spec-validator==0.*'
fi

if [ $# -ge 1 ]; then
  trunkd=$1
else
  cargo build --locked --quiet --bin trunkd
  trunkd=${CARGO_TARGET_DIR:-target}/debug/trunkd
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

dir=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

api_port=$(free_port)
link_port=$(free_port)
cat >"$dir/trunkd.toml" <<EOF
[database]
data_dir = "$dir/data"
[link]
listen = "127.0.0.1:$link_port"
[api]
listen = "127.0.0.1:$api_port"
# schemathesis tries the login route too: let it, without locking the admin out.
login_attempts_per_minute = 100000
EOF
export TRUNKD_CONFIG=$dir/trunkd.toml

# Something to find: a site, a fleet and one of its subscribers.
"$trunkd" site add --id 1 --name north --carriers 2 >/dev/null
"$trunkd" fleet add --id 100 --name police >/dev/null
"$trunkd" talkgroup add --fleet 100 --id 1 --name all >/dev/null
"$trunkd" subscriber add --imsi 001010000000001 --imei 490154203237518 --fleet 100 \
  --member 1 --talkgroups 1 >/dev/null
password=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n%s\n' "$password" "$password" | "$trunkd" operator add schemathesis --role admin >/dev/null

"$trunkd" serve >"$dir/trunkd.log" 2>&1 &
pid=$!
base="http://127.0.0.1:$api_port"
for _ in $(seq 1 100); do
  curl -sf "$base/healthz" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/trunkd.log"; echo "trunkd did not start"; exit 1; }
  sleep 0.1
done

token() {
  curl -sf "$base/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"schemathesis\",\"password\":\"$password\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

# The document itself first: valid OpenAPI 3.1.
curl -sf "$base/api/v1/openapi.json" >"$dir/openapi.json"
"$venv/bin/openapi-spec-validator" --schema 3.1.0 "$dir/openapi.json"

# Half of the identifiers generated name what exists, to get past the 404s.
cat >"$dir/schemathesis.toml" <<EOF
[dictionaries]
imsi = { values = ["001010000000001"] }
site = { values = [1] }
fleet = { values = [100] }
member = { values = [1] }
[parameters]
"path.imsi" = { dictionary = "imsi", probability = 0.5 }
"path.site" = { dictionary = "site", probability = 0.5 }
"query.site" = { dictionary = "site", probability = 0.5 }
"query.fleet" = { dictionary = "fleet", probability = 0.5 }
"body.from.fleet" = { dictionary = "fleet", probability = 0.5 }
"body.from.member" = { dictionary = "member", probability = 0.5 }
EOF

# Each run within the budget, as a whole (`timeout`), whatever the examples take; from
# the temporary directory, where schemathesis leaves its cache.
st() {
  (cd "$dir" && timeout "$budget" "$venv/bin/schemathesis" \
    --config-file "$dir/schemathesis.toml" run "$base/api/v1/openapi.json" \
    --checks "${ST_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,ignored_auth,unsupported_method}" \
    --max-examples "$max_examples" \
    --request-timeout 10 \
    --seed "${ST_SEED:-1}" \
    --generation-database none \
    --no-color \
    "$@")
}

status=0
# Everything but the event stream, which stays open, and logout, which would end the
# session every later request uses; then logout on a session of its own.
st -H "Authorization: Bearer $(token)" \
  --exclude-path /api/v1/events --exclude-path /api/v1/auth/logout || status=$?
if [ "$status" -eq 0 ]; then
  st -H "Authorization: Bearer $(token)" --include-path /api/v1/auth/logout || status=$?
fi

if [ "$status" -ne 0 ]; then
  echo "schemathesis failed ($status); the server's log:"
  tail -n 50 "$dir/trunkd.log"
fi
exit "$status"
