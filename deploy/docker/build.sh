#!/usr/bin/env bash
# Builds the coordinator and site images with no network during `docker build`:
#   1. the base image: a Debian bookworm root filesystem (python3 3.11, python3-venv) from Debian packages,
#      made with mmdebstrap and `docker import`ed (skipped when the image exists);
#   2. the wheelhouse: a wheel of every package of requirements.lock for Python 3.11 (cp311), cached outside
#      the checkout under the lock's hash (the slow part); the project's own wheel in deploy/docker/project;
#   3. both targets of deploy/docker/Dockerfile with `docker build --network none`.
# Usage: deploy/docker/build.sh            offline (needs mmdebstrap, a Debian mirror and PyPI on the host)
#        deploy/docker/build.sh --internet  base python:3.11-slim and packages from the index (network in the build)
# Environment: TAG (0.1.0), BASE_IMAGE (oncofed/base:bookworm), DEBIAN_MIRROR (http://deb.debian.org),
#              WHEEL_CACHE (/var/cache/oncofed/wheelhouse), DOCKER (the docker CLI; see below).
set -euo pipefail
cd "$(dirname "$0")/../.."

TAG="${TAG:-0.1.0}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org}"
WHEEL_CACHE="${WHEEL_CACHE:-/var/cache/oncofed/wheelhouse}"
WHEELHOUSE=deploy/docker/wheelhouse
MODE=offline
[ "${1:-}" = "--internet" ] && MODE=internet
# BuildKit is needed (RUN --mount, Dockerfile.dockerignore): Debian's docker.io CLI (20.10) has it built in; a
# newer CLI needs its buildx plugin.
if [ -z "${DOCKER:-}" ]; then
    if docker buildx version >/dev/null 2>&1; then DOCKER=docker; else DOCKER=/usr/bin/docker; fi
fi
export DOCKER_BUILDKIT=1

started=$(date +%s)
step() { echo "[build] $1 at $(( $(date +%s) - started )) s; load average $(cut -d' ' -f1-3 /proc/loadavg)"; }

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    echo "error: the wheelhouse is made for the images' Python 3.11 (cp311); run build.sh with a Python 3.11" \
         "(PYTHON=/path/to/python3.11), e.g. the project's .venv" >&2; exit 2; }

if [ "$MODE" = offline ]; then
    BASE_IMAGE="${BASE_IMAGE:-oncofed/base:bookworm}"
    if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        step "base image $BASE_IMAGE exists"
    else
        command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap is missing: apt-get install -y mmdebstrap" >&2; exit 2; }
        # minbase: dpkg, apt, coreutils, passwd (useradd); python3 is Debian bookworm's 3.11
        mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
            --aptopt='Acquire::Languages "none"' \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            bookworm - "deb $MIRROR/debian bookworm main" "deb $MIRROR/debian bookworm-updates main" \
            "deb $MIRROR/debian-security bookworm-security main" \
            | "$DOCKER" import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
        step "base image $BASE_IMAGE made from Debian packages"
    fi
    LOCK_KEY=$(cat requirements.lock | sha256sum | cut -c1-16)
    CACHED="$WHEEL_CACHE/$LOCK_KEY"
    if [ -f "$CACHED/.complete" ]; then
        step "wheelhouse for the lock $LOCK_KEY cached in $CACHED"
    else
        rm -rf "$CACHED.partial" && mkdir -p "$CACHED.partial"
        # with dependency resolution: the lock leaves out setuptools (which torch requires), pip adds it here
        # exactly as `pip install -r requirements.lock` does in a venv
        "$PYTHON" -m pip wheel --quiet --disable-pip-version-check -r requirements.lock -w "$CACHED.partial"
        touch "$CACHED.partial/.complete" && rm -rf "$CACHED" && mv "$CACHED.partial" "$CACHED"
        step "wheelhouse for the lock $LOCK_KEY made in $CACHED ($(du -sh "$CACHED" | cut -f1))"
    fi
    find "$WHEELHOUSE" -name '*.whl' -delete
    cp -l "$CACHED"/*.whl "$WHEELHOUSE"/ 2>/dev/null || cp "$CACHED"/*.whl "$WHEELHOUSE"/
    BUILD_ARGS=(--network none --build-arg "BASE_IMAGE=$BASE_IMAGE")
else
    find "$WHEELHOUSE" -name '*.whl' -delete
    BUILD_ARGS=(--network host --build-arg BASE_IMAGE=python:3.11-slim
                --build-arg "PIP_SOURCE=--extra-index-url https://download.pytorch.org/whl/cpu")
fi
# the project's wheel, reproducible (file times from the last commit): an unchanged checkout gives the same bytes,
# so docker reuses the project's layer
rm -rf build deploy/docker/project && mkdir -p deploy/docker/project   # (a stale build/ would leak old files)
SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || echo 315532800)" \
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps . -w deploy/docker/project
step "project wheel built"

for target in coordinator site; do
    "$DOCKER" build --quiet "${BUILD_ARGS[@]}" -f deploy/docker/Dockerfile --target "$target" \
        -t "oncofed/$target:$TAG" . >/dev/null
    step "image oncofed/$target:$TAG built"
done
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^oncofed/'
