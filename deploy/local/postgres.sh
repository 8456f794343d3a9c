#!/usr/bin/env bash
# Local PostgreSQL cluster for Lapse development and tests: its own data directory
# under the repo's state dir (not Debian's system cluster), on 127.0.0.1:55432, with
# the roles and databases the services, the tests and the demo need.
#
# Usage: deploy/local/postgres.sh {install|start|stop|status|reset|psql [ARGS...]}
#
# Environment (all optional):
#   LAPSE_STATE_DIR       state root (default: <repo>/.lapse); Postgres uses $LAPSE_STATE_DIR/postgres
#   LAPSE_PG_PORT         TCP port on 127.0.0.1 (default 55432)
#   LAPSE_PG_BIN          directory holding initdb/pg_ctl/postgres (default: newest
#                         /usr/lib/postgresql/*/bin, else initdb on PATH; apt-get installs
#                         the `postgresql` package when none is found)
#   LAPSE_PG_OS_USER      OS user that owns and runs the cluster when this script runs as
#                         root (default postgres; initdb and postgres refuse to run as root)
#   LAPSE_PG_WAIT_TIMEOUT seconds to wait for the server to accept connections (default 60)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

STATE_DIR="${LAPSE_STATE_DIR:-$REPO_ROOT/.lapse}"
PG_HOST=127.0.0.1
PG_PORT="${LAPSE_PG_PORT:-55432}"
PG_OS_USER="${LAPSE_PG_OS_USER:-postgres}"
PG_WAIT_TIMEOUT="${LAPSE_PG_WAIT_TIMEOUT:-60}"
PG_SUPERUSER=postgres

PG_STATE="$STATE_DIR/postgres"

# PostgreSQL runs as its own OS user, which cannot enter a private home directory (Debian
# creates every home 0700, so a clone under /root or /home/you is out of its reach). Then
# the cluster lives in /var/lib/lapse instead, at a path derived from the state dir so that
# start, stop and status always agree, with a symlink from the usual place for people.
nearest_existing() {
  local path="$1"
  while [ ! -e "$path" ]; do path="$(dirname "$path")"; done
  printf '%s' "$path"
}
if [ "$(id -u)" -eq 0 ] && id "$PG_OS_USER" >/dev/null 2>&1 && [ ! -L "$PG_STATE" ] \
    && ! runuser -u "$PG_OS_USER" -- test -x "$(nearest_existing "$STATE_DIR")"; then
  RELOCATED="/var/lib/lapse/postgres-$(printf '%s' "$STATE_DIR" | cksum | cut -d' ' -f1)"
  echo "[postgres] OS user '$PG_OS_USER' cannot enter $STATE_DIR (a parent directory is private); the cluster lives in $RELOCATED (linked from $PG_STATE)"
  mkdir -p /var/lib/lapse "$RELOCATED" "$STATE_DIR"
  chmod 0755 /var/lib/lapse
  # Left by a run before this fix: only directories, nothing PostgreSQL could have written.
  if [ -d "$PG_STATE" ] && [ ! -e "$PG_STATE/data/PG_VERSION" ]; then rm -rf "$PG_STATE"; fi
  ln -sfn "$RELOCATED" "$PG_STATE"
  PG_STATE="$RELOCATED"
elif [ -L "$PG_STATE" ]; then
  PG_STATE="$(readlink -f "$PG_STATE")"
fi
DATA_DIR="$PG_STATE/data"
SOCKET_DIR="$PG_STATE/run"
LOG_DIR="$PG_STATE/logs"
LOG_FILE="$LOG_DIR/postgres.log"

PG_BIN=""

log()  { echo "[postgres] $*"; }
warn() { echo "[postgres] WARNING: $*" >&2; }
die()  { echo "[postgres] ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- binaries

find_pg_bin() {
  local d
  if [ -n "${LAPSE_PG_BIN:-}" ]; then
    [ -x "$LAPSE_PG_BIN/initdb" ] && [ -x "$LAPSE_PG_BIN/pg_ctl" ] \
      || die "LAPSE_PG_BIN=$LAPSE_PG_BIN does not contain initdb and pg_ctl"
    PG_BIN="$LAPSE_PG_BIN"
    return 0
  fi
  # Debian keeps the server binaries off PATH, one directory per major version.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -rn); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
      PG_BIN="$d"
      return 0
    fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    PG_BIN="$(dirname "$(readlink -f "$(command -v initdb)")")"
    return 0
  fi
  return 1
}

cmd_install() {
  if find_pg_bin; then
    log "PostgreSQL server binaries found in $PG_BIN ($("$PG_BIN/postgres" --version))"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "initdb/pg_ctl not found and not running as root, so cannot apt-get install postgresql; install it (Debian: apt-get install -y postgresql) or set LAPSE_PG_BIN"
  command -v apt-get >/dev/null 2>&1 || die "initdb/pg_ctl not found and apt-get is not available; install PostgreSQL and set LAPSE_PG_BIN"
  log "initdb/pg_ctl not found; installing the Debian 'postgresql' package..."
  apt-get update -q || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql || die "apt-get install -y postgresql failed"
  find_pg_bin || die "postgresql was installed but initdb/pg_ctl are still not found under /usr/lib/postgresql/*/bin"
  log "installed PostgreSQL: $("$PG_BIN/postgres" --version) in $PG_BIN"
}

require_bin() {
  find_pg_bin || cmd_install
  export PATH="$PG_BIN:$PATH"
  command -v psql >/dev/null 2>&1 || die "psql not found (PATH=$PATH); apt-get install -y postgresql-client"
  command -v pg_isready >/dev/null 2>&1 || die "pg_isready not found; apt-get install -y postgresql-client"
}

# ---------------------------------------------------------------- helpers

# initdb/pg_ctl/postgres refuse to run as root: run them as $PG_OS_USER instead.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    "$@"
  fi
}

# Unix sockets have a ~107 byte path limit; use a short directory under /tmp if needed.
pick_socket_dir() {
  if [ $(( ${#SOCKET_DIR} + 20 )) -gt 100 ]; then
    local short
    short="/tmp/lapse-pg-$(printf '%s' "$PG_STATE" | cksum | cut -d' ' -f1)"
    warn "socket dir $SOCKET_DIR is too long for a Unix socket path; using $short"
    SOCKET_DIR="$short"
  fi
}

prepare_dirs() {
  mkdir -p "$PG_STATE" "$SOCKET_DIR" "$LOG_DIR"
  if [ "$(id -u)" -eq 0 ]; then
    id "$PG_OS_USER" >/dev/null 2>&1 \
      || die "OS user '$PG_OS_USER' does not exist (the Debian postgresql package creates 'postgres'); create it or set LAPSE_PG_OS_USER"
    chown "$PG_OS_USER:" "$PG_STATE" "$LOG_DIR" "$SOCKET_DIR"
    [ -d "$DATA_DIR" ] && chown -R "$PG_OS_USER:" "$DATA_DIR"
    if ! runuser -u "$PG_OS_USER" -- test -w "$PG_STATE" -a -x "$PG_STATE"; then
      die "OS user '$PG_OS_USER' cannot reach $PG_STATE; set LAPSE_STATE_DIR to a directory it can reach, e.g. /var/lib/lapse-state"
    fi
  fi
}

is_running() { [ -f "$DATA_DIR/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" status -D "$DATA_DIR" >/dev/null 2>&1; }

ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres -t 2 >/dev/null 2>&1; }

port_open() { (exec 3<>"/dev/tcp/$PG_HOST/$PG_PORT") 2>/dev/null; }

show_log_tail() {
  if [ -s "$LOG_FILE" ]; then
    echo "[postgres] ---- last 40 lines of $LOG_FILE ----" >&2
    tail -n 40 "$LOG_FILE" >&2
    echo "[postgres] ---- end of $LOG_FILE ----" >&2
  fi
}

init_cluster() {
  if [ -f "$DATA_DIR/PG_VERSION" ]; then
    local have want
    have="$(cat "$DATA_DIR/PG_VERSION")"
    want="$("$PG_BIN/postgres" --version | sed -nE 's/^[^0-9]*([0-9]+).*/\1/p')"
    [ "$have" = "$want" ] \
      || die "$DATA_DIR was created by PostgreSQL $have but the server binaries in $PG_BIN are $want; run '$0 reset' to recreate it (data is lost) or set LAPSE_PG_BIN"
    return 0
  fi
  log "initdb: creating a new cluster in $DATA_DIR (superuser '$PG_SUPERUSER', owned by OS user '$(if [ "$(id -u)" -eq 0 ]; then echo "$PG_OS_USER"; else id -un; fi)')"
  # Trust auth: this is a throwaway dev/test cluster bound to 127.0.0.1 only. Never
  # copy these settings to a real deployment.
  local out
  if ! out="$(as_pg "$PG_BIN/initdb" -D "$DATA_DIR" -U "$PG_SUPERUSER" -E UTF8 --locale=C \
                --auth-local=trust --auth-host=trust --no-instructions 2>&1)"; then
    echo "$out" | tail -n 20 | sed 's/^/[postgres]   /' >&2
    rm -rf "$DATA_DIR"
    die "initdb failed"
  fi
  echo "include_if_exists = 'lapse.conf'" | as_pg tee -a "$DATA_DIR/postgresql.conf" >/dev/null
}

write_config() {
  # Rewritten on every start so that port/socket changes take effect.
  as_pg tee "$DATA_DIR/lapse.conf" >/dev/null <<EOF
# Generated by deploy/local/postgres.sh on every start -- local dev/test cluster only.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$SOCKET_DIR'
# The services, the connector agent and parallel tests each hold connection pools.
max_connections = 300
shared_buffers = 128MB
# Durability is pointless for a throwaway dev/test database and fsync dominates
# test-suite time on small disks; a crash may corrupt the cluster (then run reset).
fsync = off
synchronous_commit = off
full_page_writes = off
log_line_prefix = '%m [%p] %q%u@%d '
log_connections = off
EOF
  # Dev only: trust for local socket and loopback TCP (passwords are set but not checked).
  as_pg tee "$DATA_DIR/pg_hba.conf" >/dev/null <<'EOF'
# Generated by deploy/local/postgres.sh -- DEV ONLY: no password checks on loopback.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   trust
host    all       all   ::1/128        trust
EOF
}

psql_super() {
  psql -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PG_PORT" -U "$PG_SUPERUSER" "$@"
}

bootstrap_sql() {
  log "ensuring roles and databases (idempotent)..."
  psql_super -d postgres <<'SQL' || die "creating roles/databases failed"
SET client_min_messages = warning;
-- Cluster-wide roles. Passwords are set even though pg_hba uses trust locally, so the
-- same URLs keep working against a password-checking server.
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM (VALUES
      ('lapse',       'LOGIN CREATEDB PASSWORD ''lapse'''),
      ('lapse_agent', 'LOGIN CREATEROLE PASSWORD ''lapse_agent'''),
      ('alice',       'LOGIN PASSWORD ''alice'''),
      ('bob',         'LOGIN PASSWORD ''bob'''),
      ('demo_read',   'NOLOGIN'),
      ('demo_write',  'NOLOGIN')) AS t(name, opts)
  LOOP
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.name) THEN
      EXECUTE format('ALTER ROLE %I %s', r.name, r.opts);
    ELSE
      EXECUTE format('CREATE ROLE %I %s', r.name, r.opts);
    END IF;
  END LOOP;
END
$$;
-- The connector agent (lapse_agent) grants/revokes the demo group roles. Up to
-- PostgreSQL 15 its CREATEROLE attribute is enough (checked on 15.18). From 16 on it
-- needs ADMIN OPTION on each role; INHERIT/SET FALSE keep it from using the privileges
-- it hands out. On 15 it gets no membership at all, for the same reason.
DO $$
BEGIN
  IF current_setting('server_version_num')::int >= 160000 THEN
    EXECUTE 'GRANT demo_read, demo_write TO lapse_agent WITH ADMIN TRUE, INHERIT FALSE, SET FALSE';
  ELSIF EXISTS (SELECT 1 FROM pg_auth_members m
                JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
                WHERE u.rolname = 'lapse_agent' AND g.rolname IN ('demo_read', 'demo_write')) THEN
    REVOKE demo_read, demo_write FROM lapse_agent;
  END IF;
END
$$;

SELECT 'CREATE DATABASE lapse OWNER lapse' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'lapse') \gexec
SELECT 'CREATE DATABASE lapse_test OWNER lapse' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'lapse_test') \gexec
SELECT 'CREATE DATABASE demo_target' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'demo_target') \gexec
SQL
  # Demo target contents: a small table whose access is governed by demo_read/demo_write,
  # so a granted (or revoked) just-in-time membership is visible to alice and bob.
  psql_super -d demo_target <<'SQL' || die "preparing demo_target failed"
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS public.customers (
  id    serial PRIMARY KEY,
  name  text NOT NULL,
  email text NOT NULL
);
INSERT INTO public.customers (name, email)
SELECT * FROM (VALUES ('Ada Lovelace', 'ada@example.com'),
                      ('Grace Hopper', 'grace@example.com'),
                      ('Alan Turing', 'alan@example.com')) AS v(name, email)
WHERE NOT EXISTS (SELECT 1 FROM public.customers);
GRANT SELECT ON ALL TABLES IN SCHEMA public TO demo_read;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO demo_write;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO demo_write;
GRANT CONNECT ON DATABASE demo_target TO alice, bob, lapse_agent;
SQL
}

print_urls() {
  log "connection URLs:"
  log "  services:   postgresql://lapse:lapse@$PG_HOST:$PG_PORT/lapse"
  log "  tests:      postgresql://lapse:lapse@$PG_HOST:$PG_PORT/lapse_test"
  log "  demo agent: postgresql://lapse_agent:lapse_agent@$PG_HOST:$PG_PORT/demo_target"
  log "  demo users: postgresql://alice:alice@$PG_HOST:$PG_PORT/demo_target, postgresql://bob:bob@$PG_HOST:$PG_PORT/demo_target"
  log "  superuser:  postgresql://$PG_SUPERUSER@$PG_HOST:$PG_PORT/postgres (socket dir $SOCKET_DIR)"
}

# ---------------------------------------------------------------- commands

cmd_start() {
  require_bin
  pick_socket_dir
  if is_running; then
    log "already running ($(head -n1 "$DATA_DIR/postmaster.pid" 2>/dev/null | sed 's/^/pid /'), data $DATA_DIR)"
  else
    if port_open; then
      die "port $PG_PORT on $PG_HOST is already in use by another process (not the cluster in $DATA_DIR); stop it or set LAPSE_PG_PORT"
    fi
    prepare_dirs
    init_cluster
    write_config
    log "starting $("$PG_BIN/postgres" --version) on $PG_HOST:$PG_PORT (data $DATA_DIR, log $LOG_FILE)"
    if ! as_pg "$PG_BIN/pg_ctl" start -D "$DATA_DIR" -l "$LOG_FILE" -w -t "$PG_WAIT_TIMEOUT" >/dev/null 2>&1; then
      show_log_tail
      die "pg_ctl start failed (see $LOG_FILE)"
    fi
  fi
  local deadline=$((SECONDS + PG_WAIT_TIMEOUT))
  until ready; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_log_tail
      die "timed out after ${PG_WAIT_TIMEOUT}s waiting for pg_isready on $PG_HOST:$PG_PORT"
    fi
    sleep 0.5
  done
  log "accepting connections on $PG_HOST:$PG_PORT"
  bootstrap_sql
  print_urls
}

cmd_stop() {
  require_bin
  if ! is_running; then
    log "not running; nothing to stop"
    return 0
  fi
  log "stopping (pg_ctl stop -m fast)..."
  if ! as_pg "$PG_BIN/pg_ctl" stop -D "$DATA_DIR" -m fast -w -t 60 >/dev/null 2>&1; then
    show_log_tail
    die "pg_ctl stop failed"
  fi
  log "stopped"
}

cmd_status() {
  require_bin
  pick_socket_dir
  if is_running; then
    log "running ($(head -n1 "$DATA_DIR/postmaster.pid" | sed 's/^/pid /')) on $PG_HOST:$PG_PORT, data $DATA_DIR"
    log "  postgresql://lapse:lapse@$PG_HOST:$PG_PORT/lapse"
    return 0
  fi
  log "not running (would listen on $PG_HOST:$PG_PORT, data $DATA_DIR)"
  return 3
}

cmd_reset() {
  cmd_stop
  log "deleting $DATA_DIR"
  rm -rf "$DATA_DIR"
  log "reset done"
}

cmd_psql() {
  require_bin
  pick_socket_dir
  exec psql -X -h "$SOCKET_DIR" -p "$PG_PORT" -U "$PG_SUPERUSER" "$@"
}

usage() {
  cat >&2 <<EOF
usage: $0 {install|start|stop|status|reset|psql [ARGS...]}
  install  make sure PostgreSQL server binaries exist (apt-get install postgresql if not)
  start    initdb if needed, start on $PG_HOST:$PG_PORT, create roles/databases, print URLs
  stop     pg_ctl stop -m fast
  status   print whether the cluster runs (exit 0) or not (exit 3)
  reset    stop and delete the data directory
  psql     open psql as the superuser (e.g. '$0 psql -d demo_target')
EOF
  exit 2
}

main() {
  local cmd="${1:-}"
  [ $# -gt 0 ] && shift
  case "$cmd" in
    install) cmd_install ;;
    start)   cmd_start ;;
    stop)    cmd_stop ;;
    status)  cmd_status ;;
    reset)   cmd_reset ;;
    psql)    cmd_psql "$@" ;;
    *)       usage ;;
  esac
}

main "$@"
