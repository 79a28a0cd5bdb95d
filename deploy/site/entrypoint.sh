#!/bin/sh
# A site container: check the site config, key pair, CA and the SuperLink's certificate, then join.
# SUPERLINK (host:port) must be set; the file locations default to the mounts the site image documents.
# CLIENTAPPIO_PORT: the SuperNode's local port for its ClientApps (distinct per site when sites share a host network).
set -eu
: "${SUPERLINK:?set SUPERLINK to the coordinator's host:port}"
ROOT_CERTIFICATES="${ROOT_CERTIFICATES:-/certs/ca.crt}"
PRIVATE_KEY="${PRIVATE_KEY:-/keys/node_key}"
SITE_CONFIG="${SITE_CONFIG:-/site/site.toml}"
python /opt/oncofed/deploy/site/preflight.py --superlink "$SUPERLINK" --root-certificates "$ROOT_CERTIFICATES" \
    --private-key "$PRIVATE_KEY" --site-config "$SITE_CONFIG" --wait-s "${PREFLIGHT_WAIT_S:-120}"
exec flower-supernode --superlink "$SUPERLINK" --root-certificates "$ROOT_CERTIFICATES" \
    --auth-supernode-private-key "$PRIVATE_KEY" --node-config "site-config='$SITE_CONFIG'" \
    --host 127.0.0.1 --port "${CLIENTAPPIO_PORT:-9094}"
