#!/usr/bin/env bash
# The container path, as CI runs it and as an operator can on one Debian machine (as root):
#   1. Docker Engine, docker-compose and mmdebstrap from Debian's packages (skipped when installed);
#   2. dockerd with host networking only: no bridge network, no iptables rules (skipped when one answers);
#   3. the offline image build (deploy/docker/build.sh);
#   4. the compose consortium test (tests/deploy/test_containers.py): hardening, a 2-round federation with TLS
#      and SuperNode authentication, a site stopped mid-run, the coordinator restarted and resumed.
# It stops the dockerd it started (the images stay, as the next run's cache). Run from the repository root
# with the project's venv active (its Python 3.11 makes the wheelhouse; its flwr submits the runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
step() { echo "[containers] $1 at $(( $(date +%s) - started )) s; load average $(cut -d' ' -f1-3 /proc/loadavg)"; }

if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null || ! command -v mmdebstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose mmdebstrap >/dev/null
    step "installed docker.io, docker-compose, mmdebstrap"
fi
# Debian's CLI (20.10) matches its engine and has BuildKit built in (a newer docker CLI would need buildx)
export DOCKER="${DOCKER:-/usr/bin/docker}"

DOCKERD_PID=""
stop_dockerd() {
    if [ -n "$DOCKERD_PID" ]; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        wait "$DOCKERD_PID" 2>/dev/null || true
        echo "[containers] stopped the dockerd it started (pid $DOCKERD_PID)"
    fi
}
trap stop_dockerd EXIT
if ! "$DOCKER" info >/dev/null 2>&1; then
    mkdir -p /tmp/oncofed-ci
    dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
        > /tmp/oncofed-ci/dockerd.log 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
    "$DOCKER" info >/dev/null 2>&1 || { tail -20 /tmp/oncofed-ci/dockerd.log; exit 1; }
    step "dockerd started (pid $DOCKERD_PID, --bridge=none: host networking only)"
fi

bash deploy/docker/build.sh
step "images built"
python -m pytest -q -p no:cacheprovider --durations=0 tests/deploy/test_containers.py
step "container test passed"
