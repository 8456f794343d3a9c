#!/usr/bin/env bash
# The test command (`make test`): installs what is missing, starts the real Kafka broker and
# PostgreSQL unless KAFKA_BOOTSTRAP_SERVERS / LAPSE_TEST_DATABASE_URL point elsewhere, checks
# lint, types and generated code, then runs unit and integration tests.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
log() { printf '[test] %s\n' "$*"; }

if ! command -v uv >/dev/null 2>&1; then
  log "installing uv from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
uv sync --frozen --quiet

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  deploy/local/kafka.sh start
  export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:${KAFKA_PORT:-9092}"
  # The broker's super user, for the admin step each test stack runs (another broker:
  # point this at a file with its super user's LAPSE_KAFKA_* settings).
  export LAPSE_TEST_KAFKA_ADMIN_ENV="${LAPSE_STATE_DIR:-$REPO/.lapse}/kafka/admin.env"
fi
if [ -z "${LAPSE_TEST_DATABASE_URL:-}" ]; then
  deploy/local/postgres.sh start
  export LAPSE_TEST_DATABASE_URL="postgresql+asyncpg://lapse:lapse@127.0.0.1:${LAPSE_PG_PORT:-55432}/lapse_test"
  export LAPSE_TEST_TARGET_DSN="${LAPSE_TEST_TARGET_DSN:-postgresql://lapse_agent:lapse_agent@127.0.0.1:${LAPSE_PG_PORT:-55432}/demo_target}"
fi

log "ruff"
uv run ruff check .
log "mypy (strict)"
uv run mypy
log "generated protobuf code"
uv run python proto/generate.py --check
if command -v npx >/dev/null 2>&1; then
  log "buf lint"
  npx --yes @bufbuild/buf@1.75.0 lint
  # Agents in customer networks upgrade later than the platform: a field renumbered or
  # removed must fail here. Against the last release tag, or the previous commit until
  # there is one.
  baseline="$(git describe --tags --abbrev=0 --match 'v*' 2>/dev/null || git rev-parse --verify --quiet HEAD~1 || true)"
  if [ -n "$baseline" ]; then
    log "buf breaking against $baseline"
    previous="$(mktemp -d)"
    git archive "$baseline" buf.yaml proto | tar -x -C "$previous"
    npx --yes @bufbuild/buf@1.75.0 breaking --against "$previous"
    rm -rf "$previous"
  else
    log "buf breaking skipped: no release tag and no previous commit in this clone"
  fi
else
  log "buf lint skipped: npx (Node.js) is not installed"
fi
started=$(date +%s)
# Unit tests on both cores (they share nothing); integration tests one at a time, since
# they share one Kafka and one PostgreSQL and several measure how fast the system reacts.
# The slowest tests are printed so a suite growing past its time budget shows where.
# Both parts run even if the first fails, so one run reports every failure. Exit status 5
# is pytest's "no tests selected", which arguments like -k may cause in one of the parts.
failed=0
run_part() {
  local what="$1"; shift
  log "pytest: $what"
  local status=0
  uv run pytest "$@" || status=$?
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
    log "$what FAILED (pytest exit status $status)"
    failed="$status"
  fi
}
run_part "unit tests (2 workers)" -m "not integration" -n 2 --durations=10 "$@"
run_part "integration tests" -m integration --durations=25 "$@"
log "suite took $(( $(date +%s) - started ))s"
exit "$failed"
