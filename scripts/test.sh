#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: starts Postgres if it is down, installs
# Prometheus, promtool, Alertmanager, openssl, kubectl, schemathesis, kubernetes-validate
# and check-jsonschema if missing, then runs cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "PostgreSQL client tools are missing: apt-get install -y postgresql" >&2
  exit 1
fi
if ! pg_up; then
  log "PostgreSQL is down; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
fi

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
# The Postgres TLS tests make their CA and server certificates with it.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# kubectl's built-in kustomize renders deploy/kubernetes (tests/kubernetes.rs).
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v st >/dev/null 2>&1; then
  log "installing schemathesis (OpenAPI fuzzing)"
  python3 -m pip install -q --disable-pip-version-check schemathesis
fi

if ! command -v kubernetes-validate >/dev/null 2>&1 || ! command -v check-jsonschema >/dev/null 2>&1; then
  log "installing kubernetes-validate and check-jsonschema (Kubernetes manifests)"
  python3 -m pip install -q --disable-pip-version-check kubernetes-validate check-jsonschema
fi

log "cargo test"
cargo test --locked --workspace "$@"
