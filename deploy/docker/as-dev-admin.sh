#!/bin/sh
# Runs one admin command of the `lapse` CLI in deploy/compose.yml (service enroll-demo-agent):
# logs the CLI in as a dev admin first (`lapse login --dev --roles admin`: a 5-minute token
# minted with LAPSE_DEV_TOKEN_KEY_FILE, kept in this container's own ~/.lapse), then runs
# COMMAND.
#
# usage: as-dev-admin.sh [--unless-exists FILE] COMMAND [ARGS...]
#
# --unless-exists FILE: do nothing if FILE exists (and is not empty). Compose runs the
# one-shot on every `up`, but an agent is enrolled once: `lapse agents enroll` writes the
# agent's env file last, so it marks a finished enrollment, and the revoker refuses to
# enroll an enrolled agent again (`lapse agents rotate-key` gives it a new key). Run other
# admin commands the same way:
#   docker compose -f deploy/compose.yml run --rm enroll-demo-agent \
#     lapse agents rotate-key demo-agent --out /agent-secrets
set -eu

usage() {
  echo "usage: as-dev-admin.sh [--unless-exists FILE] COMMAND [ARGS...]" >&2
  exit 2
}

if [ "${1:-}" = "--unless-exists" ]; then
  [ $# -ge 3 ] || usage
  if [ -s "$2" ]; then
    echo "[as-dev-admin] $2 exists already: nothing to do"
    exit 0
  fi
  shift 2
fi
[ $# -ge 1 ] || usage

lapse login --dev --user lapse-setup --groups "" --roles admin --ttl 5m
exec "$@"
