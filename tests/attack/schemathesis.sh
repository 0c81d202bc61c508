#!/usr/bin/env bash
# The attacker's API suite: schemathesis (PyPI) generates requests from schemas/openapi.yaml,
# valid and invalid, against a real core with an admin token, and checks
# every answer: no 5xx, every status and body as the spec says, invalid input refused, valid
# input accepted. Bounded (examples per operation, a fixed seed, a time limit), so CI is
# repeatable; any failure fails the test command.
# Usage: tests/attack/schemathesis.sh SCHEMATHESIS_BIN
set -euo pipefail
cd "$(dirname "$0")/../.."
st=${1:?usage: $0 path/to/schemathesis}
bin=target/debug/tessera
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" > "$data/core.log" 2>&1 &
core=$!
trap 'kill "$core" 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
admin=$("$bin" token issue --admin --data-dir "$data")
# --checks all: not_a_server_error, status codes, content types, headers, response schemas,
# and that schema-violating requests are refused and schema-valid ones accepted.
timeout 600 "$st" run schemas/openapi.yaml \
  --url "http://127.0.0.1:$port" \
  -H "Authorization: Bearer $admin" \
  --checks all \
  --max-examples 30 \
  --seed 20261201 \
  --no-color
# Whatever it sent, the core is still alive and answered nothing with a 5xx in its log.
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null
if grep -q '"status":5[0-9][0-9]' "$data/core.log"; then
  echo "the core answered 5xx during the run:"; grep '"status":5' "$data/core.log" | head -5
  exit 1
fi
echo "schemathesis: no server error, no schema mismatch"
