#!/usr/bin/env bash
# Local single-node Apache Kafka broker (KRaft, broker+controller in one JVM) for
# Lapse development and tests. No Docker, no tarball download: the real broker jars
# come from Maven Central through `mvn` (see deploy/local/kafka/pom.xml).
#
# Usage: deploy/local/kafka.sh {install|start|stop|status|wait [SECONDS]|reset|logs [N]|tool CLASS [ARGS]}
#
# Environment (all optional):
#   LAPSE_STATE_DIR        state root (default: <repo>/.lapse); Kafka uses $LAPSE_STATE_DIR/kafka
#   LAPSE_CACHE_DIR        jar cache root (default: ~/.cache/lapse); jars in kafka-<version>/libs
#   KAFKA_VERSION          Kafka version to try first (default 4.4.0); if it does not
#                          resolve, the newest 4.x that does is used instead
#   KAFKA_PORT             PLAINTEXT listener port on 127.0.0.1 (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener port on 127.0.0.1 (default 9093)
#   KAFKA_HEAP_OPTS        broker heap flags (default "-Xms256m -Xmx1g")
#   KAFKA_WAIT_TIMEOUT     seconds `wait`/`start` wait for readiness (default 90)
#   KAFKA_STOP_TIMEOUT     seconds `stop` waits after SIGTERM before SIGKILL (default 30)
#   LAPSE_MVN_ARGS         extra arguments for mvn (e.g. -Dmaven.repo.local=/some/dir)
#   JAVA                   java binary (default: java on PATH)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
KAFKA_DEPLOY_DIR="$SCRIPT_DIR/kafka"
POM="$KAFKA_DEPLOY_DIR/pom.xml"
BROKER_LOG4J="$KAFKA_DEPLOY_DIR/log4j2.xml"
TOOLS_LOG4J="$KAFKA_DEPLOY_DIR/tools-log4j2.xml"

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
CACHE_DIR="${LAPSE_CACHE_DIR:-$HOME/.cache/lapse}"
STATE_DIR="${LAPSE_STATE_DIR:-$REPO_ROOT/.lapse}"
KAFKA_HOST=127.0.0.1
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
KAFKA_WAIT_TIMEOUT="${KAFKA_WAIT_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
LAPSE_MVN_ARGS="${LAPSE_MVN_ARGS:-}"
JAVA="${JAVA:-java}"

K_STATE="$STATE_DIR/kafka"
DATA_DIR="$K_STATE/data"
LOG_DIR="$K_STATE/logs"
SERVER_LOG="$LOG_DIR/server.log"
STDOUT_LOG="$LOG_DIR/stdout.log"
CONF_FILE="$K_STATE/server.properties"
PID_FILE="$K_STATE/kafka.pid"
CLUSTER_ID_FILE="$K_STATE/cluster.id"
BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"

LIBS_DIR=""        # set by find_cached_libs / install
RESOLVED_VERSION="" # the Kafka version whose jars are in LIBS_DIR

log()  { echo "[kafka] $*"; }
warn() { echo "[kafka] WARNING: $*" >&2; }
die()  { echo "[kafka] ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- prerequisites

apt_install() {
  [ "$(id -u)" -eq 0 ] || die "$1 is missing and this is not root, so it cannot be apt-get installed; install it (Debian: apt-get install -y ${*:2})"
  command -v apt-get >/dev/null 2>&1 || die "$1 is missing and apt-get is not available; install it by hand"
  log "$1 not found; installing Debian packages: ${*:2}"
  apt-get update -q || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${@:2}" || die "apt-get install ${*:2} failed"
}

ensure_java() {
  if ! command -v "$JAVA" >/dev/null 2>&1; then
    apt_install java openjdk-17-jre-headless
    command -v "$JAVA" >/dev/null 2>&1 || die "java still not found after apt-get install"
  fi
  local major
  major="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | head -n1)"
  case "$major" in
    1.*|[0-9]|1[0-6]) die "Kafka 4.x needs Java 17 or newer, found java.specification.version=$major ($JAVA)" ;;
  esac
}

ensure_maven() {
  if ! command -v mvn >/dev/null 2>&1; then
    apt_install mvn maven
    command -v mvn >/dev/null 2>&1 || die "mvn still not found after apt-get install"
  fi
}

# ---------------------------------------------------------------- install

libs_complete() { [ -f "$CACHE_DIR/kafka-$1/.complete" ] && compgen -G "$CACHE_DIR/kafka-$1/libs/kafka_2.13-*.jar" >/dev/null; }

# Sets LIBS_DIR/RESOLVED_VERSION from the cache, without calling Maven. Returns 1 if absent.
find_cached_libs() {
  local v="$KAFKA_VERSION"
  if ! libs_complete "$v" && [ -f "$CACHE_DIR/kafka-fallback-for-$KAFKA_VERSION" ]; then
    v="$(cat "$CACHE_DIR/kafka-fallback-for-$KAFKA_VERSION")"
  fi
  if libs_complete "$v"; then
    LIBS_DIR="$CACHE_DIR/kafka-$v/libs"
    RESOLVED_VERSION="$v"
    return 0
  fi
  return 1
}

# mvn dependency:copy-dependencies for one exact version into the cache.
fetch_version() {
  local v="$1" dest="$CACHE_DIR/kafka-$1" tmp mvn_log
  mkdir -p "$dest"
  tmp="$dest/libs.tmp.$$"
  mvn_log="$dest/mvn.log"
  rm -rf "$tmp"
  log "fetching org.apache.kafka:kafka_2.13:$v + kafka-tools + log4j2 through Maven (log: $mvn_log)..."
  # shellcheck disable=SC2086  # LAPSE_MVN_ARGS is intentionally word-split
  if ! mvn -B -q -Dstyle.color=never -f "$POM" $LAPSE_MVN_ARGS "-Dkafka.version=$v" \
        dependency:copy-dependencies -DincludeScope=runtime "-DoutputDirectory=$tmp" >"$mvn_log" 2>&1; then
    rm -rf "$tmp"
    # Keep the log next to the cache root, drop the empty version directory.
    mv "$mvn_log" "$CACHE_DIR/mvn-kafka-$v.failed.log" 2>/dev/null && mvn_log="$CACHE_DIR/mvn-kafka-$v.failed.log"
    rmdir "$dest" 2>/dev/null || true
    warn "Maven could not fetch Kafka $v (full log: $mvn_log):"
    sed 's/\x1b\[[0-9;]*m//g' "$mvn_log" | grep -E '^\[ERROR\] [A-Z]' \
      | grep -vE 'Re-run Maven|full stack trace|For more information|^\[ERROR\] \[Help' \
      | head -n 3 | sed 's/^/[kafka]   /' >&2 || true
    return 1
  fi
  compgen -G "$tmp/kafka_2.13-$v.jar" >/dev/null || { rm -rf "$tmp"; warn "Maven succeeded but kafka_2.13-$v.jar is missing from $tmp"; return 1; }
  rm -rf "$dest/libs"
  mv "$tmp" "$dest/libs"
  echo "$v" >"$dest/version"
  touch "$dest/.complete"
  LIBS_DIR="$dest/libs"
  RESOLVED_VERSION="$v"
  log "cached $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars in $LIBS_DIR"
}

# Newest kafka_2.13 version in [4.0.0, $1) according to Maven's repository metadata.
latest_4x_below() {
  local upper="$1" out
  out="$(mktemp)"
  # shellcheck disable=SC2086
  if mvn -B -q -Dstyle.color=never -f "$POM" $LAPSE_MVN_ARGS "-Dkafka.version=[4.0.0,$upper)" \
        dependency:list -DincludeArtifactIds=kafka_2.13 -DexcludeTransitive=true "-DoutputFile=$out" >/dev/null 2>&1; then
    grep -oE 'org\.apache\.kafka:kafka_2\.13:jar:[^: ]+' "$out" | head -n1 | cut -d: -f4
  fi
  rm -f "$out"
}

cmd_install() {
  if find_cached_libs; then
    log "Kafka $RESOLVED_VERSION jars already cached in $LIBS_DIR (no Maven call)"
    return 0
  fi
  ensure_java
  ensure_maven
  [ -f "$POM" ] || die "missing $POM"
  local start=$SECONDS
  if fetch_version "$KAFKA_VERSION"; then
    log "install done in $((SECONDS - start))s"
    return 0
  fi
  warn "Kafka $KAFKA_VERSION did not resolve; looking for the newest 4.x that does"
  local upper="5.0.0" v
  for _ in 1 2 3 4; do
    v="$(latest_4x_below "$upper")"
    [ -n "$v" ] || break
    if [ "$v" != "$KAFKA_VERSION" ] && fetch_version "$v"; then
      echo "$v" >"$CACHE_DIR/kafka-fallback-for-$KAFKA_VERSION"
      warn "using Kafka $v instead of $KAFKA_VERSION"
      log "install done in $((SECONDS - start))s"
      return 0
    fi
    upper="$v"
  done
  die "could not fetch any Kafka 4.x broker through Maven (tried $KAFKA_VERSION first); see the Maven logs in $CACHE_DIR (mvn-kafka-*.failed.log)"
}

require_libs() {
  find_cached_libs || cmd_install
  ensure_java
}

# ---------------------------------------------------------------- helpers

kjava_tool() {
  # Run a Kafka CLI class with a small heap, quiet logging and fast JIT start-up.
  "$JAVA" -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$TOOLS_LOG4J" -cp "$LIBS_DIR/*" "$@"
}

read_pid() { [ -f "$PID_FILE" ] && tr -dc '0-9' <"$PID_FILE" || true; }

# True if process $1 is a broker started from our server.properties.
is_our_broker() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "kafka.Kafka $CONF_FILE"
}

# Pid of a broker running from our server.properties, found through /proc (pid file lost).
find_broker_pid() {
  local f pid
  for f in /proc/[0-9]*/cmdline; do
    pid="${f#/proc/}"; pid="${pid%/cmdline}"
    if is_our_broker "$pid"; then echo "$pid"; return 0; fi
  done
  return 1
}

# True if the pid file points at a live broker started from our server.properties.
# A broker whose pid file went missing is adopted (pid file rewritten).
is_running() {
  local pid
  pid="$(read_pid)"
  is_our_broker "$pid" && return 0
  pid="$(find_broker_pid)" || return 1
  mkdir -p "$K_STATE"
  echo "$pid" >"$PID_FILE"
}

port_open() { (exec 3<>"/dev/tcp/$KAFKA_HOST/$1") 2>/dev/null; }

show_log_tail() {
  local f
  for f in "$SERVER_LOG" "$STDOUT_LOG"; do
    if [ -s "$f" ]; then
      echo "[kafka] ---- last 40 lines of $f ----" >&2
      tail -n 40 "$f" >&2
      echo "[kafka] ---- end of $f ----" >&2
    fi
  done
}

write_config() {
  mkdir -p "$DATA_DIR" "$LOG_DIR"
  cat >"$CONF_FILE" <<EOF
# Generated by deploy/local/kafka.sh -- edits are overwritten on every start.
# Single node acting as KRaft controller and broker; dev/test only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA_DIR

# One broker: every internal topic must live with replication factor 1.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1

num.partitions=3
auto.create.topics.enable=true
# No point delaying the first consumer-group rebalance on a dev box.
group.initial.rebalance.delay.ms=0
# Keep the disk footprint small.
log.retention.hours=24
log.segment.bytes=104857600
EOF
}

# ---------------------------------------------------------------- commands

cmd_wait() {
  local timeout="${1:-$KAFKA_WAIT_TIMEOUT}" start=$SECONDS deadline
  deadline=$((SECONDS + timeout))
  require_libs
  log "waiting up to ${timeout}s for the broker on $BOOTSTRAP..."
  until port_open "$KAFKA_PORT"; do
    if [ -f "$PID_FILE" ] && ! is_running; then
      show_log_tail
      die "broker process $(read_pid) exited before it opened $BOOTSTRAP"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_log_tail
      is_running || log "(no broker started by kafka.sh is running for state dir $K_STATE; run '$0 start')"
      die "timed out after ${timeout}s: nothing accepts connections on $BOOTSTRAP"
    fi
    sleep 0.5
  done
  # The port opens before the broker is unfenced; a metadata round trip proves it serves requests.
  local props out
  props="$(mktemp)"
  printf 'request.timeout.ms=5000\ndefault.api.timeout.ms=8000\n' >"$props"
  while :; do
    if out="$(kjava_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
                --command-config "$props" --list 2>&1)"; then
      rm -f "$props"
      log "broker ready on $BOOTSTRAP after $((SECONDS - start))s"
      return 0
    fi
    if [ -f "$PID_FILE" ] && ! is_running; then
      rm -f "$props"; show_log_tail
      die "broker process exited while waiting for it to become ready"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      rm -f "$props"
      echo "$out" | tail -n 5 | sed 's/^/[kafka]   metadata check: /' >&2
      show_log_tail
      die "timed out after ${timeout}s: $BOOTSTRAP accepts connections but does not answer metadata requests"
    fi
    sleep 1
  done
}

cmd_start() {
  if is_running; then
    log "broker already running (pid $(read_pid)) on $BOOTSTRAP"
    return 0
  fi
  if [ -f "$PID_FILE" ]; then
    log "removing stale pid file $PID_FILE (pid $(read_pid) is not a running broker)"
    rm -f "$PID_FILE"
  fi
  if port_open "$KAFKA_PORT"; then
    die "port $KAFKA_PORT on $KAFKA_HOST is already in use by another process (not started by this script with state dir $K_STATE); stop it or set KAFKA_PORT"
  fi
  if port_open "$KAFKA_CONTROLLER_PORT"; then
    die "controller port $KAFKA_CONTROLLER_PORT on $KAFKA_HOST is already in use; stop that process or set KAFKA_CONTROLLER_PORT"
  fi
  require_libs
  write_config

  local cluster_id
  if [ -s "$CLUSTER_ID_FILE" ]; then
    cluster_id="$(cat "$CLUSTER_ID_FILE")"
  elif [ -f "$DATA_DIR/meta.properties" ]; then
    cluster_id="$(sed -n 's/^cluster.id=//p' "$DATA_DIR/meta.properties")"
  else
    cluster_id="$(kjava_tool kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)" \
      || die "kafka.tools.StorageTool random-uuid failed"
  fi
  [ -n "$cluster_id" ] || die "could not determine a KRaft cluster id"
  echo "$cluster_id" >"$CLUSTER_ID_FILE"

  local out
  if ! out="$(kjava_tool kafka.tools.StorageTool format --config "$CONF_FILE" \
                --cluster-id "$cluster_id" --ignore-formatted 2>&1)"; then
    echo "$out" | sed 's/^/[kafka]   /' >&2
    die "formatting KRaft storage in $DATA_DIR failed (run '$0 reset' to wipe it if it belongs to another cluster)"
  fi
  log "storage: $(echo "$out" | tail -n1)"

  log "starting Kafka $RESOLVED_VERSION broker on $BOOTSTRAP (controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT, data $DATA_DIR)"
  : >"$STDOUT_LOG"
  # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of flags
  setsid "$JAVA" $KAFKA_HEAP_OPTS \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    "-Dkafka.logs.dir=$LOG_DIR" "-Dlog4j2.configurationFile=$BROKER_LOG4J" \
    -cp "$LIBS_DIR/*" kafka.Kafka "$CONF_FILE" </dev/null >>"$STDOUT_LOG" 2>&1 &
  local pid=$!
  echo "$pid" >"$PID_FILE"
  sleep 0.3
  if ! is_running; then  # (is_running also finds the JVM if setsid had to fork)
    show_log_tail
    rm -f "$PID_FILE"
    die "broker process $pid exited right after start"
  fi
  pid="$(read_pid)"
  log "broker pid $pid (pid file $PID_FILE, log $SERVER_LOG)"
  cmd_wait
  log "Kafka is up: bootstrap servers $BOOTSTRAP"
}

cmd_stop() {
  if ! is_running; then
    if [ -f "$PID_FILE" ]; then
      log "no broker running (removing stale pid file $PID_FILE)"
      rm -f "$PID_FILE"
    else
      log "no broker running; nothing to stop"
    fi
    return 0
  fi
  local pid waited=0
  pid="$(read_pid)"
  log "stopping broker pid $pid (SIGTERM, up to ${KAFKA_STOP_TIMEOUT}s)..."
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge $((KAFKA_STOP_TIMEOUT * 2)) ]; then
      warn "broker pid $pid did not exit after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    die "broker pid $pid is still alive after SIGKILL"
  fi
  rm -f "$PID_FILE"
  log "broker stopped"
}

cmd_status() {
  if is_running; then
    log "running (pid $(read_pid)), bootstrap servers $BOOTSTRAP, state $K_STATE"
    return 0
  fi
  log "not running (bootstrap servers would be $BOOTSTRAP, state $K_STATE)"
  return 3
}

cmd_reset() {
  cmd_stop
  log "deleting $DATA_DIR and the cluster id"
  rm -rf "$DATA_DIR" "$CLUSTER_ID_FILE"
  log "reset done"
}

# Run any Kafka CLI main class against the cached classpath, e.g.
#   kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 --list
cmd_tool() {
  [ $# -ge 1 ] || die "usage: $0 tool MAIN_CLASS [ARGS...]"
  require_libs
  exec "$JAVA" -Xms32m -Xmx512m -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$TOOLS_LOG4J" -cp "$LIBS_DIR/*" "$@"
}

cmd_logs() {
  [ -f "$SERVER_LOG" ] || die "no broker log at $SERVER_LOG yet"
  tail -n "${1:-100}" "$SERVER_LOG"
}

usage() {
  cat >&2 <<EOF
usage: $0 {install|start|stop|status|wait [SECONDS]|reset|logs [LINES]|tool CLASS [ARGS...]}
  install  fetch the Kafka broker jars through Maven into $CACHE_DIR/kafka-<version>/libs (cached)
  start    format storage if needed, start the broker in the background, wait until ready
  stop     SIGTERM the broker (SIGKILL after ${KAFKA_STOP_TIMEOUT}s)
  status   print whether the broker runs (exit 0) or not (exit 3), and its address
  wait     wait until the broker answers metadata requests (default ${KAFKA_WAIT_TIMEOUT}s)
  reset    stop the broker and delete its data
  logs     print the last lines of the broker log
  tool     run a Kafka CLI class (e.g. org.apache.kafka.tools.TopicCommand) on the cached classpath
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
    wait)    cmd_wait "$@" ;;
    reset)   cmd_reset ;;
    logs)    cmd_logs "$@" ;;
    tool)    cmd_tool "$@" ;;
    *)       usage ;;
  esac
}

main "$@"
