#!/usr/bin/env bash
# The container path, as CI runs it and as an operator can on one Debian machine (as root):
#   1. Docker Engine, docker-compose and mmdebstrap from Debian's packages (skipped when installed);
#   2. dockerd with host networking only: no bridge network, no iptables rules (skipped when one answers);
#   3. the offline image build (deploy/docker/build.sh);
#   4. the compose consortium test (tests/deploy/test_containers.py): hardening, a 2-round federation with TLS
#      and SuperNode authentication, a site stopped mid-run, the coordinator restarted and resumed.
# Usage: deploy/docker/ci.sh           all four, then stops the dockerd it started
#        deploy/docker/ci.sh prepare   1-3, leaving the dockerd it started running (its pid in $CI_DIR/dockerd.pid)
#        deploy/docker/ci.sh test      4 (dockerd must answer)
#        deploy/docker/ci.sh stop      stops the dockerd that `prepare` started, if any
# .ci/run runs `prepare` in the background while the main test suite runs, then `test`, then `stop`.
# The images and the wheelhouse stay as the next run's cache. Run from the repository root with the project's
# venv active (its Python 3.11 makes the wheelhouse; its flwr submits the runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
PHASE="${1:-all}"
CI_DIR="${CI_DIR:-/tmp/oncofed-ci}"
PIDFILE="$CI_DIR/dockerd.pid"
started=$(date +%s)
step() { echo "[containers] $1 at $(( $(date +%s) - started )) s; load average $(cut -d' ' -f1-3 /proc/loadavg)"; }
# Debian's CLI (20.10) matches its engine and has BuildKit built in (a newer docker CLI would need buildx)
export DOCKER="${DOCKER:-/usr/bin/docker}"

install_packages() {
    if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null || ! command -v mmdebstrap >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose mmdebstrap >/dev/null
        step "installed docker.io, docker-compose, mmdebstrap"
    fi
}

start_dockerd() {
    "$DOCKER" info >/dev/null 2>&1 && return 0
    mkdir -p "$CI_DIR"
    # its own session: a Ctrl-C or the end of the calling script does not reach it; `stop` ends it
    setsid dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
        > "$CI_DIR/dockerd.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
    "$DOCKER" info >/dev/null 2>&1 || { tail -20 "$CI_DIR/dockerd.log"; stop_dockerd; exit 1; }
    step "dockerd started (pid $(cat "$PIDFILE"), --bridge=none: host networking only)"
}

stop_dockerd() {
    [ -f "$PIDFILE" ] || return 0
    local pid
    pid=$(cat "$PIDFILE")
    rm -f "$PIDFILE"
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "[containers] stopped the dockerd it started (pid $pid)"
}

run_test() {
    python -m pytest -q -p no:cacheprovider --durations=0 tests/deploy/test_containers.py
    step "container test passed"
}

case "$PHASE" in
    all)
        trap stop_dockerd EXIT
        install_packages
        start_dockerd
        bash deploy/docker/build.sh
        step "images built"
        run_test
        ;;
    prepare)
        install_packages
        start_dockerd
        bash deploy/docker/build.sh
        step "images built"
        ;;
    test) run_test ;;
    stop) stop_dockerd ;;
    *) echo "usage: deploy/docker/ci.sh [all|prepare|test|stop]" >&2; exit 2 ;;
esac
