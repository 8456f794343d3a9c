#!/usr/bin/env bash
# Runs the whole Lapse system on this machine without Docker: Kafka, PostgreSQL (with the
# demo target database), every service and the demo agent, each as its own process.
#
#   deploy/local/lapse.sh up       install what is missing, start everything, wait until ready
#   deploy/local/lapse.sh down     stop the services, the agent, Kafka and PostgreSQL
#   deploy/local/lapse.sh status   what runs
#   deploy/local/lapse.sh logs [SERVICE]
#
# State (databases, keys, logs, pids) lives in $LAPSE_STATE_DIR (default <repo>/.lapse).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE_DIR="${LAPSE_STATE_DIR:-$REPO/.lapse}"
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/logs"
KEY_DIR="$STATE_DIR/keys"
# One Kafka principal per process; the admin step writes each one's password here (0600).
KAFKA_CREDENTIALS="$STATE_DIR/kafka-credentials"
# The demo agent's key, Kafka password and settings, as `lapse agents enroll` writes them.
AGENT_DIR="$STATE_DIR/agents"
# The gRPC ports' TLS (python -m lapse_common.local_ca): ca.crt is what clients trust
# (LAPSE_GRPC_TLS_CAFILE), server.crt/server.key what every service presents. Kept across
# `up`s, so a CLI configured once keeps working; delete the directory to rotate.
GRPC_TLS_DIR="$STATE_DIR/tls"
SERVICES=(audit approval request grant-scheduler revoker agent)
READY_TIMEOUT="${LAPSE_READY_TIMEOUT:-120}"
# The demo's access-event producers (lapse_common.dev_keys), each a Kafka principal too.
DEMO_PRODUCERS="--producer hr-offboarding --producer incident-bot --producer ci-pipelines"

log() { printf '[lapse] %s\n' "$*"; }
die() { printf '[lapse] error: %s\n' "$*" >&2; exit 1; }

ensure_python_env() {
  if ! command -v uv >/dev/null 2>&1; then
    log "installing uv (Python package manager) from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check uv || die "could not install uv with pip"
  fi
  log "installing Lapse's Python packages (uv sync)"
  (cd "$REPO" && uv sync --frozen --quiet) || die "uv sync failed"
}

environment() {
  cat <<ENV
LAPSE_KAFKA_BOOTSTRAP_SERVERS=${LAPSE_KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:${KAFKA_PORT:-9092}}
LAPSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL
LAPSE_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
LAPSE_KAFKA_SSL_CAFILE=$STATE_DIR/kafka/tls/ca.crt
LAPSE_DATABASE_URL=${LAPSE_DATABASE_URL:-postgresql+asyncpg://lapse:lapse@127.0.0.1:${LAPSE_PG_PORT:-55432}/lapse}
LAPSE_AUTH_DEV_MODE=true
LAPSE_AUTH_PUBLIC_KEY_FILE=$KEY_DIR/dev-token.pub
LAPSE_AUTH_SUBJECT_ONLY_ISSUERS=lapse-chatops=$KEY_DIR/chatops-token.pub
LAPSE_AUTH_SERVICE_PUBLIC_KEY_FILES=$KEY_DIR/services/request.pub
LAPSE_AUTH_SERVICE_KEY_FILE=$KEY_DIR/services/request.key
LAPSE_DEV_TOKEN_KEY_FILE=$KEY_DIR/dev-token.key
LAPSE_SCHEDULER_COMMAND_SIGNING_KEY_FILE=$KEY_DIR/command-signing.key
LAPSE_REVOKER_COMMAND_SIGNING_KEY_FILE=$KEY_DIR/command-signing.key
LAPSE_AUDIT_CHECKPOINT_KEY_FILE=$KEY_DIR/audit-checkpoint.key
LAPSE_AUDIT_CHECKPOINT_DIR=$STATE_DIR/audit-checkpoints
LAPSE_APPROVAL_FLOW_FILES=${LAPSE_APPROVAL_FLOW_FILES:-$REPO/deploy/demo/flows.yaml}
LAPSE_AUTH_DIRECTORY_FILE=${LAPSE_AUTH_DIRECTORY_FILE:-$REPO/deploy/demo/directory.yaml}
LAPSE_REQUEST_ACCESS_EVENT_PRODUCERS_FILE=$KEY_DIR/producers/registry.yaml
LAPSE_GRPC_TLS_CERTFILE=$GRPC_TLS_DIR/server.crt
LAPSE_GRPC_TLS_KEYFILE=$GRPC_TLS_DIR/server.key
LAPSE_GRPC_TLS_CAFILE=$GRPC_TLS_DIR/ca.crt
ENV
}

# What only the agent gets: the target's credentials never reach the central services (nor
# the shell that sources lapse.env to use the CLI).
agent_environment() {
  cat <<ENV
LAPSE_AGENT_AGENT_ID=demo-agent
LAPSE_AGENT_CONFIG_FILE=$REPO/deploy/demo/agent.yaml
LAPSE_AGENT_COMMAND_PUBLIC_KEY_FILE=$KEY_DIR/command-signing.pub
LAPSE_AGENT_STATE_PATH=$STATE_DIR/agent-demo-agent.db
LAPSE_DEMO_TARGET_DSN=${LAPSE_DEMO_TARGET_DSN:-postgresql://lapse_agent:lapse_agent@127.0.0.1:${LAPSE_PG_PORT:-55432}/demo_target}
ENV
}

# write_private FILE FUNCTION: FUNCTION's output becomes FILE, mode 0600 from its first byte
# (mktemp creates the staging file 0600, then an atomic rename), so a secret is never
# readable by others, not even while it is written.
write_private() {
  local file="$1" staged
  staged="$(mktemp "$file.XXXXXX")"
  "$2" >"$staged" || { rm -f "$staged"; return 1; }
  mv -f "$staged" "$file"
}

# The demo agent gets its identity the way any agent does: `lapse agents enroll`, run by an
# admin (a short-lived dev admin token) with the Kafka super user's settings.
enroll_demo_agent() {
  if [ -s "$AGENT_DIR/demo-agent.env" ]; then
    log "demo-agent enrolled already ($AGENT_DIR/demo-agent.env)"
    return
  fi
  local cli_home
  cli_home="$(mktemp -d)"
  (
    set -a; . "$STATE_DIR/lapse.env"; . "$STATE_DIR/kafka/admin.env"; set +a
    export LAPSE_CLI_HOME="$cli_home"
    "$REPO/.venv/bin/lapse" login --dev --user lapse-setup --roles admin --ttl 5m >/dev/null
    "$REPO/.venv/bin/lapse" agents enroll demo-agent --out "$AGENT_DIR"
  ) || { rm -rf "$cli_home"; die "enrolling the demo agent failed (output above)"; }
  rm -rf "$cli_home"
}

pid_of() { cat "$RUN_DIR/$1.pid" 2>/dev/null || true; }
running() { local pid; pid="$(pid_of "$1")"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

start_service() {
  local name="$1" module="lapse_${1//-/_}"
  if running "$name"; then
    log "$name already running (pid $(pid_of "$name"))"
    return
  fi
  : >"$LOG_DIR/$name.log"
  (
    set -a; . "$STATE_DIR/lapse.env"; set +a
    if [ "$name" = agent ]; then
      # Its id, signing key and Kafka credential come from `lapse agents enroll`.
      set -a; . "$STATE_DIR/agent.env"; . "$AGENT_DIR/demo-agent.env"; set +a
    else
      export LAPSE_KAFKA_USERNAME="lapse-$name"
      export LAPSE_KAFKA_PASSWORD_FILE="$KAFKA_CREDENTIALS/lapse-$name.password"
    fi
    cd "$REPO"
    exec nohup "$REPO/.venv/bin/python" -m "$module" >>"$LOG_DIR/$name.log" 2>&1
  ) &
  echo $! >"$RUN_DIR/$name.pid"
}

wait_ready() {
  local name="$1" waited=0
  until grep -q "lapse-$name ready" "$LOG_DIR/$name.log" 2>/dev/null; do
    if ! running "$name"; then
      tail -n 30 "$LOG_DIR/$name.log" >&2 || true
      die "$name exited during start-up (log above, full log $LOG_DIR/$name.log)"
    fi
    if [ "$waited" -ge "$((READY_TIMEOUT * 10))" ]; then
      tail -n 30 "$LOG_DIR/$name.log" >&2 || true
      die "$name not ready after ${READY_TIMEOUT}s (log $LOG_DIR/$name.log)"
    fi
    sleep 0.1; waited=$((waited + 1))
  done
  log "$name ready (pid $(pid_of "$name"))"
}

cmd_up() {
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  ensure_python_env
  "$REPO/deploy/local/kafka.sh" start
  "$REPO/deploy/local/postgres.sh" start
  "$REPO/.venv/bin/python" -m lapse_common.dev_keys "$KEY_DIR" >/dev/null
  "$REPO/.venv/bin/python" -m lapse_common.local_ca "$GRPC_TLS_DIR" >/dev/null \
    || die "could not make the gRPC TLS certificates in $GRPC_TLS_DIR"
  # The admin step, as the broker's super user: topics, a principal per process, its ACLs.
  (
    set -a; . "$STATE_DIR/kafka/admin.env"; set +a
    "$REPO/.venv/bin/python" -m lapse_common.kafka_admin setup \
      --credentials-dir "$KAFKA_CREDENTIALS" $DEMO_PRODUCERS  # (word-split on purpose)
  ) || die "the Kafka admin step failed (output above)"
  write_private "$STATE_DIR/lapse.env" environment
  write_private "$STATE_DIR/agent.env" agent_environment
  for name in "${SERVICES[@]}"; do [ "$name" = agent ] || start_service "$name"; done
  for name in "${SERVICES[@]}"; do [ "$name" = agent ] || wait_ready "$name"; done
  enroll_demo_agent
  start_service agent
  wait_ready agent
  cat <<DONE
[lapse] Lapse is up. Logs: $LOG_DIR. Try:
    set -a; . $STATE_DIR/lapse.env; set +a
    uv run lapse login --dev --user alice --groups engineering
    uv run lapse request demo-pg/appdb read --as alice --for 2m --reason "look at a bug" --wait
    uv run lapse activity
  gRPC is TLS only; clients trust the local CA $GRPC_TLS_DIR/ca.crt
  (LAPSE_GRPC_TLS_CAFILE in lapse.env), e.g.:
    grpcurl -cacert $GRPC_TLS_DIR/ca.crt 127.0.0.1:50051 list
  Stop everything with: make down
DONE
}

stop_service() {
  local name="$1" pid
  pid="$(pid_of "$name")"
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$RUN_DIR/$name.pid"; return
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not stop within 15s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/$name.pid"
  log "$name stopped"
}

cmd_down() {
  for name in agent revoker grant-scheduler request approval audit; do stop_service "$name"; done
  "$REPO/deploy/local/kafka.sh" stop
  "$REPO/deploy/local/postgres.sh" stop
}

cmd_status() {
  for name in "${SERVICES[@]}"; do
    if running "$name"; then log "$name: running (pid $(pid_of "$name"))"; else log "$name: stopped"; fi
  done
  "$REPO/deploy/local/kafka.sh" status || true
  "$REPO/deploy/local/postgres.sh" status || true
}

cmd_logs() {
  if [ $# -gt 0 ]; then tail -n 100 -f "$LOG_DIR/$1.log"; else tail -n 20 "$LOG_DIR"/*.log; fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  *) echo "usage: $0 up|down|status|logs [SERVICE]" >&2; exit 2 ;;
esac
