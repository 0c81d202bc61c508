#!/usr/bin/env bash
# End to end on a kind cluster: builds both images, loads them into a new cluster, installs the
# core chart (two replicas, the hello plugin declared in namespace team-a) and the template
# plugin's chart, waits until the plugin is Ready in the core (admin API through a
# port-forward), runs `tessera plugin check` against the plugin, disables and re-enables it,
# and deletes the cluster. Needs docker, kind, kubectl, helm 3, cargo, curl and python3.
#
#   kind/e2e.sh            # KEEP=1 kind/e2e.sh keeps the cluster for a look around
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${CLUSTER:-tessera-e2e}
keep=${KEEP:-0}
core_ns=tessera-system
plugin_ns=team-a
core_port=18080
plugin_port=18081
forwards=()

say() { printf '\n==> %s\n' "$*"; }
fail() { echo "e2e: FAIL: $*" >&2; exit 1; }

for tool in docker kind kubectl helm cargo curl python3; do
  command -v "$tool" >/dev/null || { echo "e2e: $tool is required" >&2; exit 2; }
done

cleanup() {
  for pid in "${forwards[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$keep" = 1 ]; then
    echo "e2e: kept cluster $cluster (kind delete cluster --name $cluster)"
  else
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# Polls a command until it succeeds: wait_for SECONDS WHAT COMMAND...
wait_for() {
  local limit=$1 what=$2
  shift 2
  for _ in $(seq 1 "$limit"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  fail "not within ${limit}s: $what"
}

# The plugin's state in the core (admin API through the port-forward).
state() {
  curl -sf -H "Authorization: Bearer $admin" "http://127.0.0.1:$core_port/api/plugins/hello" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["state"])'
}
is_ready() { [ "$(state)" = Ready ]; }
listed() {
  curl -sf "http://127.0.0.1:$core_port/api/shell/remotes" |
    python3 -c 'import json, sys; sys.exit(0 if any(r["name"] == "hello" for r in json.load(sys.stdin)) else 1)'
}
not_listed() { ! listed; }

say "cluster $cluster"
kind create cluster --name "$cluster" --config kind/cluster.yaml --wait 180s

say "images"
docker build -t tessera:e2e .
docker build -f plugin-template/Dockerfile -t hello-plugin:e2e .
kind load docker-image tessera:e2e hello-plugin:e2e --name "$cluster"

say "the core chart (hello declared in $plugin_ns)"
kubectl create namespace "$core_ns"
kubectl create namespace "$plugin_ns"
helm install tessera chart --namespace "$core_ns" \
  --set image.repository=tessera --set image.tag=e2e --set image.pullPolicy=Never \
  --set-json "plugins=[{\"name\":\"hello\",\"namespace\":\"$plugin_ns\",\"capabilities\":[\"ui:panel\",\"ui:route\"]}]" \
  --wait --timeout 180s
wait_for 60 "the leader writes the token Secret" \
  kubectl -n "$plugin_ns" get secret plugin-reg-token-hello

say "the plugin chart"
helm dependency build plugin-template/chart
helm install hello plugin-template/chart --namespace "$plugin_ns" \
  --set image.repository=hello-plugin --set image.tag=e2e --set image.pullPolicy=Never \
  --set core.url="http://tessera.$core_ns.svc" --wait --timeout 180s

say "the plugin is Ready in the core"
cargo build -q --bin tessera
admin=$(target/debug/tessera token issue --admin --ttl 1h --core-namespace "$core_ns")
kubectl -n "$core_ns" port-forward svc/tessera "$core_port:80" >/dev/null 2>&1 &
forwards+=($!)
wait_for 30 "the core answers through the port-forward" curl -sf "http://127.0.0.1:$core_port/readyz"
wait_for 180 "hello Ready" is_ready
wait_for 30 "hello in the shell list" listed

say "tessera plugin check against the plugin"
kubectl -n "$plugin_ns" port-forward svc/hello "$plugin_port:8080" >/dev/null 2>&1 &
forwards+=($!)
wait_for 30 "the plugin answers through the port-forward" curl -sf "http://127.0.0.1:$plugin_port/healthz"
target/debug/tessera plugin check --url "http://127.0.0.1:$plugin_port" --manifest plugin-template/plugin.yaml

say "kill switch: disable, then enable"
curl -sf -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"reason": "e2e kill switch"}' "http://127.0.0.1:$core_port/api/plugins/hello/disable" >/dev/null
wait_for 10 "hello gone from the shell list" not_listed
[ "$(state)" = Disabled ] || fail "hello is $(state), not Disabled"
curl -sf -X POST -H "Authorization: Bearer $admin" "http://127.0.0.1:$core_port/api/plugins/hello/enable" >/dev/null
wait_for 60 "hello Ready again" is_ready
wait_for 30 "hello back in the shell list" listed

say "PASS"
