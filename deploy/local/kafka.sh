#!/usr/bin/env bash
# Local single-node Apache Kafka broker (KRaft, broker+controller in one JVM) for
# Lapse development and tests. No Docker, no tarball download: the real broker jars
# come from Maven Central through `mvn` (see deploy/local/kafka/pom.xml).
#
# Secured like production: clients authenticate with SASL/SCRAM-SHA-512 over TLS
# (SASL_SSL), the StandardAuthorizer denies whatever no ACL allows, and topics are
# never created automatically. The super user is lapse-admin; its random password,
# the local CA and the broker certificate are made on the first start and kept.
#
# Usage: deploy/local/kafka.sh {install|start|stop|status|wait [SECONDS]|reset|logs [N]|env|tool CLASS [ARGS]}
#   eval "$(deploy/local/kafka.sh env)"   # LAPSE_KAFKA_* settings for clients (admin.env)
#   deploy/local/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 \
#     --command-config .lapse/kafka/admin.properties --list
#
# Environment (all optional):
#   LAPSE_STATE_DIR        state root (default: <repo>/.lapse); Kafka uses $LAPSE_STATE_DIR/kafka
#   LAPSE_CACHE_DIR        jar cache root (default: ~/.cache/lapse); jars in kafka-<version>/libs
#   KAFKA_VERSION          Kafka version to try first (default 4.4.0); if it does not
#                          resolve, the newest 4.x that does is used instead
#   KAFKA_PORT             SASL_SSL (SCRAM) client listener port on 127.0.0.1 (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener port on 127.0.0.1, SSL with required
#                          client certificates: the broker's own only (default 9093)
#   KAFKA_HEAP_OPTS        broker heap flags (default "-Xms256m -Xmx1g")
#   KAFKA_WAIT_TIMEOUT     seconds `wait`/`start` wait for readiness (default 90)
#   KAFKA_STOP_TIMEOUT     seconds `stop` waits after SIGTERM before SIGKILL (default 30)
#   LAPSE_MVN_ARGS         extra arguments for mvn (e.g. -Dmaven.repo.local=/some/dir)
#   JAVA                   java binary (default: java on PATH)
#
# Files in $LAPSE_STATE_DIR/kafka that other tools use (rewritten on every start):
#   admin.properties       Kafka CLI client properties as lapse-admin (--command-config)
#   admin.env              LAPSE_KAFKA_BOOTSTRAP_SERVERS, _SECURITY_PROTOCOL, _SASL_MECHANISM,
#                          _USERNAME, _PASSWORD_FILE, _SSL_CAFILE (also printed by `env`)
#   tls/ca.crt             the local CA that signed the broker certificate (trust this)
#   secrets/lapse-admin.password   the super user's password
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

# Security material. tls/ and secrets/ survive `reset` (clients keep trusting the CA and
# the password stays valid); delete them to rotate (the next start then wipes the data).
TLS_DIR="$K_STATE/tls"
CA_KEY="$TLS_DIR/ca.key"             # PKCS#8, 0600
CA_CERT="$TLS_DIR/ca.crt"            # what clients trust (ssl cafile / PEM truststore)
BROKER_KEY="$TLS_DIR/broker.key"     # PKCS#8, unencrypted, 0600
BROKER_CERT="$TLS_DIR/broker.crt"    # CN=lapse-kafka-broker, SAN IP:127.0.0.1, DNS:localhost
BROKER_KEYSTORE="$TLS_DIR/broker.pem" # key + cert + CA cert: the broker's PEM key store, 0600
SECRETS_DIR="$K_STATE/secrets"
ADMIN_USER=lapse-admin
# The super user's password: 48 hex characters, written WITHOUT a trailing newline
# (readers may still strip whitespace).
ADMIN_PASSWORD_FILE="$SECRETS_DIR/$ADMIN_USER.password"
ADMIN_PROPS="$K_STATE/admin.properties"
ADMIN_ENV="$K_STATE/admin.env"
# The broker authenticates to its controller listener with its certificate; Kafka's
# default principal builder names it after the certificate's subject.
BROKER_CN=lapse-kafka-broker
BROKER_PRINCIPAL="User:CN=$BROKER_CN"
# Which security layout the data dir was formatted for. SCRAM credentials can only be
# bootstrapped at format time (StorageTool --add-scram), so a data dir without this
# marker (formatted by the old PLAINTEXT kafka.sh) is wiped and formatted again.
SECURITY_MARKER="$K_STATE/security.version"
SECURITY_VERSION="1 sasl_ssl-scram-sha-512 mtls-controller standard-authorizer"
ADMIN_PASSWORD=""    # read by ensure_admin_password / read_admin_password
ADMIN_PASSWORD_NEW=0 # 1 if this start had to create the password file

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

ensure_openssl() {
  if ! command -v openssl >/dev/null 2>&1; then
    apt_install openssl openssl
    command -v openssl >/dev/null 2>&1 || die "openssl still not found after apt-get install"
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
  # KJAVA_TIMEOUT=SECONDS bounds the run (coreutils timeout).
  local bound=()
  [ -z "${KJAVA_TIMEOUT:-}" ] || bound=(timeout -k 5 "$KJAVA_TIMEOUT")
  "${bound[@]}" "$JAVA" -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
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

# write_private FILE FUNCTION [ARGS...]: FUNCTION's output becomes FILE, mode 0600 from its
# first byte (mktemp creates the staging file 0600 in FILE's directory, then an atomic
# rename), so a secret is never readable by others, not even while it is written.
write_private() {
  local file="$1" staged
  shift
  staged="$(mktemp "$file.XXXXXX")" || die "cannot create a staging file next to $file"
  "$@" >"$staged" || { rm -f "$staged"; die "writing $file failed"; }
  mv -f "$staged" "$file"
}

# ---------------------------------------------------------------- TLS and credentials

# OpenSSL config for the CA and the broker certificate (own file: no dependency on the
# system openssl.cnf, whose defaults would add or duplicate extensions).
openssl_config() {
  cat <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[v3_broker]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
# serverAuth for both listeners; clientAuth because the broker presents the same
# certificate to its own controller listener (ssl.client.auth=required there).
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
}

# True if private key $1 belongs to certificate $2.
key_matches_cert() {
  local k c
  k="$(openssl pkey -in "$1" -pubout 2>/dev/null)" || return 1
  c="$(openssl x509 -in "$2" -noout -pubkey 2>/dev/null)" || return 1
  [ -n "$k" ] && [ "$k" = "$c" ]
}

# Runs "$@" (openssl commands writing to staging files) with umask 077, so every file
# openssl creates is 0600 from its first byte; on failure prints openssl's output, returns 1.
run_openssl() {
  local what="$1" out
  shift
  if ! out="$( (umask 077; "$@") 2>&1)"; then
    echo "$out" | sed 's/^/[kafka]   /' >&2
    warn "openssl failed to $what"
    return 1
  fi
}

gen_ca() {
  local cfg key crt
  cfg="$(mktemp)"; openssl_config >"$cfg"
  key="$(mktemp "$CA_KEY.XXXXXX")"; crt="$(mktemp "$CA_CERT.XXXXXX")"
  if ! run_openssl "create the CA key" openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$key" \
     || ! run_openssl "create the CA certificate" openssl req -x509 -new -config "$cfg" -extensions v3_ca \
            -key "$key" -subj "/CN=Lapse local Kafka CA" -sha256 -days 3650 \
            -set_serial "0x$(openssl rand -hex 16)" -out "$crt"; then
    rm -f "$cfg" "$key" "$crt"
    die "could not create the local CA in $TLS_DIR"
  fi
  rm -f "$cfg"
  chmod 644 "$crt"  # a certificate is public
  mv -f "$key" "$CA_KEY"
  mv -f "$crt" "$CA_CERT"
}

gen_broker_cert() {
  local cfg key crt
  cfg="$(mktemp)"; openssl_config >"$cfg"
  key="$(mktemp "$BROKER_KEY.XXXXXX")"; crt="$(mktemp "$BROKER_CERT.XXXXXX")"
  # genpkey writes PKCS#8 ("BEGIN PRIVATE KEY"), the only key format Kafka's PEM store reads.
  # shellcheck disable=SC2016  # the inner sh script expands its own positional arguments
  if ! run_openssl "create the broker key" openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key" \
     || ! run_openssl "create the broker certificate" sh -c '
            set -e
            csr="$(openssl req -new -config "$1" -key "$2" -subj "/CN=$3")"
            printf "%s\n" "$csr" | openssl x509 -req -CA "$4" -CAkey "$5" \
              -set_serial "0x$(openssl rand -hex 16)" -sha256 -days 825 \
              -extfile "$1" -extensions v3_broker -out "$6"' \
            sh "$cfg" "$key" "$BROKER_CN" "$CA_CERT" "$CA_KEY" "$crt"; then
    rm -f "$cfg" "$key" "$crt"
    die "could not create the broker certificate in $TLS_DIR"
  fi
  rm -f "$cfg"
  chmod 644 "$crt"
  mv -f "$key" "$BROKER_KEY"
  mv -f "$crt" "$BROKER_CERT"
}

# Why the broker certificate must be (re)made, or nothing if it is fine.
broker_cert_problem() {
  if [ ! -s "$BROKER_KEY" ] || [ ! -s "$BROKER_CERT" ]; then
    echo "it does not exist yet"
  elif ! openssl verify -CAfile "$CA_CERT" -purpose sslserver "$BROKER_CERT" >/dev/null 2>&1 \
       || ! openssl verify -CAfile "$CA_CERT" -purpose sslclient "$BROKER_CERT" >/dev/null 2>&1; then
    echo "it was not signed by the current CA $CA_CERT (or has expired)"
  elif ! openssl x509 -in "$BROKER_CERT" -noout -checkend $((30 * 86400)) >/dev/null 2>&1; then
    echo "it expires within 30 days"
  elif ! key_matches_cert "$BROKER_KEY" "$BROKER_CERT"; then
    echo "it does not match $BROKER_KEY"
  fi
}

broker_keystore() { cat "$BROKER_KEY" "$BROKER_CERT" "$CA_CERT"; }

# The local CA (made once, reused on every start) and the broker's key and certificate
# (remade only if missing, not signed by the current CA, expiring, or not matching).
ensure_tls() {
  ensure_openssl
  mkdir -p "$K_STATE"
  [ -d "$TLS_DIR" ] || mkdir -m 755 "$TLS_DIR"
  if [ ! -s "$CA_KEY" ] || [ ! -s "$CA_CERT" ] || ! key_matches_cert "$CA_KEY" "$CA_CERT"; then
    if [ -e "$CA_CERT" ] || [ -e "$CA_KEY" ]; then
      warn "$CA_CERT / $CA_KEY are incomplete or do not match; making a new CA (clients must trust the new $CA_CERT)"
    fi
    log "creating a local CA in $TLS_DIR (ca.crt, ca.key)"
    gen_ca
  elif ! openssl x509 -in "$CA_CERT" -noout -checkend 86400 >/dev/null 2>&1; then
    warn "the local CA $CA_CERT expires within a day; making a new one (clients must trust the new $CA_CERT)"
    gen_ca
  fi
  local problem
  problem="$(broker_cert_problem)"
  if [ -n "$problem" ]; then
    log "creating the broker certificate $BROKER_CERT ($problem): CN=$BROKER_CN, SAN IP:127.0.0.1, DNS:localhost"
    gen_broker_cert
  fi
  write_private "$BROKER_KEYSTORE" broker_keystore
}

new_password() {
  local p
  p="$(openssl rand -hex 24)" || return 1
  printf '%s' "$p"  # no trailing newline
}

# Creates the super user's password once and reads it into ADMIN_PASSWORD.
# Sets ADMIN_PASSWORD_NEW=1 if it had to be created.
ensure_admin_password() {
  [ -d "$SECRETS_DIR" ] || mkdir -m 700 "$SECRETS_DIR"
  if [ ! -s "$ADMIN_PASSWORD_FILE" ]; then
    log "creating a random password for the Kafka super user $ADMIN_USER in $ADMIN_PASSWORD_FILE"
    write_private "$ADMIN_PASSWORD_FILE" new_password
    ADMIN_PASSWORD_NEW=1
  fi
  read_admin_password
}

read_admin_password() {
  ADMIN_PASSWORD="$(tr -d ' \t\r\n' <"$ADMIN_PASSWORD_FILE")"
  # It goes into JAAS strings and --add-scram's [name=...,password=...] syntax unquoted.
  case "$ADMIN_PASSWORD" in
    ""|*[!A-Za-z0-9._~-]*)
      die "$ADMIN_PASSWORD_FILE must hold a password of letters, digits and . _ ~ - only; delete it to get a new random one (the data dir is then reformatted)" ;;
  esac
}

scram_jaas() {  # JAAS line for lapse-admin, for server.properties and admin.properties
  printf 'org.apache.kafka.common.security.scram.ScramLoginModule required username="%s" password="%s";' \
    "$ADMIN_USER" "$ADMIN_PASSWORD"
}

# Wipes a data dir that was formatted for another security layout (or whose SCRAM credential
# belongs to a lost password): --add-scram only works at format time.
check_storage_security() {
  [ -f "$DATA_DIR/meta.properties" ] || return 0
  local marker reason=""
  marker="$(cat "$SECURITY_MARKER" 2>/dev/null || true)"
  if [ -z "$marker" ]; then
    reason="it was formatted by the old insecure kafka.sh (PLAINTEXT, no SCRAM credentials; no $SECURITY_MARKER)"
  elif [ "$marker" != "$SECURITY_VERSION" ]; then
    reason="it was formatted for security layout '$marker', not '$SECURITY_VERSION'"
  elif [ "$ADMIN_PASSWORD_NEW" = 1 ]; then
    reason="$ADMIN_PASSWORD_FILE was missing, so its SCRAM credential in the metadata belongs to a lost password"
  else
    return 0
  fi
  log "wiping $DATA_DIR and the cluster id: $reason. SCRAM credentials can only be added when storage is formatted, so it is formatted again (topics and offsets are lost)"
  rm -rf "$DATA_DIR" "$CLUSTER_ID_FILE" "$SECURITY_MARKER"
}

# A broker that an older kafka.sh started (PLAINTEXT) is still running for this state dir:
# server.properties is only written when no broker runs, so it is what the running one read.
die_if_legacy_broker_running() {
  if [ "$(cat "$SECURITY_MARKER" 2>/dev/null || true)" != "$SECURITY_VERSION" ] \
     || ! grep -q '^listener.security.protocol.map=CLIENT:SASL_SSL,' "$CONF_FILE" 2>/dev/null; then
    die "the broker running for $K_STATE (pid $(read_pid)) was started by an older kafka.sh (PLAINTEXT, no authentication); run '$0 stop' and then '$0 start' to switch it to SASL_SSL (its data dir is then wiped and formatted again)"
  fi
}

server_properties() {
  cat <<EOF
# Generated by deploy/local/kafka.sh -- edits are overwritten on every start.
# Single node acting as KRaft controller and broker; dev/test only, but secured like
# production. Mode 0600: it holds lapse-admin's password (inter-broker JAAS below).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER

# Listeners:
#   CLIENT      $KAFKA_HOST:$KAFKA_PORT, SASL_SSL with SCRAM-SHA-512 (SCRAM-SHA-256 enabled too):
#               every client and Kafka's CLI tools.
#   CONTROLLER  $KAFKA_HOST:$KAFKA_CONTROLLER_PORT, SSL with ssl.client.auth=required: only a
#               certificate signed by the local CA gets in, i.e. this broker's own
#               ($BROKER_PRINCIPAL). Kafka does not support SCRAM on KRaft controller
#               listeners (KAFKA-15513: SCRAM credentials live in the metadata log that
#               the controller quorum serves), hence mTLS there.
# Inter-broker traffic (with one node: the broker talking to itself, e.g. transaction
# markers) uses the CLIENT listener as the super user $ADMIN_USER over SCRAM-SHA-512, whose
# credential is bootstrapped at format time; that needs no third port or second certificate.
listeners=CLIENT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=CLIENT://$KAFKA_HOST:$KAFKA_PORT
listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SSL
inter.broker.listener.name=CLIENT
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=$(scram_jaas)
listener.name.client.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.client.ssl.client.auth=none
listener.name.controller.ssl.client.auth=required

# TLS from PEM files (no JKS): broker.pem = PKCS#8 key + certificate + CA. The same key
# store is the server side of both listeners and the client side of the connection to
# the controller; the broker checks that the controller's certificate names 127.0.0.1.
ssl.keystore.type=PEM
ssl.keystore.location=$BROKER_KEYSTORE
ssl.truststore.type=PEM
ssl.truststore.location=$CA_CERT
ssl.endpoint.identification.algorithm=https

# Whatever no ACL allows is denied; the super users bypass ACLs.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$ADMIN_USER;$BROKER_PRINCIPAL

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
# Topics are created explicitly (by an admin), never by a produce or fetch.
auto.create.topics.enable=false
# No point delaying the first consumer-group rebalance on a dev box.
group.initial.rebalance.delay.ms=0
# Keep the disk footprint small.
log.retention.hours=24
log.segment.bytes=104857600
EOF
}

write_config() {
  mkdir -p "$DATA_DIR" "$LOG_DIR"
  write_private "$CONF_FILE" server_properties
}

admin_properties() {
  cat <<EOF
# Generated by deploy/local/kafka.sh on every start: Kafka's CLI tools as the super user
# $ADMIN_USER, e.g. kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server $BOOTSTRAP --command-config $ADMIN_PROPS --list
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$(scram_jaas)
ssl.truststore.type=PEM
ssl.truststore.location=$CA_CERT
EOF
}

admin_env() {
  printf 'LAPSE_KAFKA_BOOTSTRAP_SERVERS=%q\n' "$BOOTSTRAP"
  printf 'LAPSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL\n'
  printf 'LAPSE_KAFKA_SASL_MECHANISM=SCRAM-SHA-512\n'
  printf 'LAPSE_KAFKA_USERNAME=%q\n' "$ADMIN_USER"
  printf 'LAPSE_KAFKA_PASSWORD_FILE=%q\n' "$ADMIN_PASSWORD_FILE"
  printf 'LAPSE_KAFKA_SSL_CAFILE=%q\n' "$CA_CERT"
}

# admin.properties (holds the password) and admin.env (points at it), both 0600.
write_client_files() {
  write_private "$ADMIN_PROPS" admin_properties
  write_private "$ADMIN_ENV" admin_env
}

# ---------------------------------------------------------------- commands

cmd_wait() {
  local timeout="${1:-$KAFKA_WAIT_TIMEOUT}" start=$SECONDS deadline
  deadline=$((SECONDS + timeout))
  require_libs
  [ -s "$ADMIN_PROPS" ] \
    || die "no $ADMIN_PROPS (the super user's client settings): the broker for state dir $K_STATE was never started by this kafka.sh; run '$0 start'"
  if is_running; then die_if_legacy_broker_running; fi
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
  # The port opens before the broker is unfenced; a metadata round trip as the super user
  # (SASL_SSL, SCRAM-SHA-512, the CA from admin.properties) proves it serves authenticated
  # requests. Each try is bounded so a dead broker or the deadline is noticed in time.
  local out left auth_failures=0
  while :; do
    left=$((deadline - SECONDS))
    [ "$left" -ge 5 ] || left=5
    [ "$left" -le 20 ] || left=20
    if out="$(KJAVA_TIMEOUT=$left kjava_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
                --command-config "$ADMIN_PROPS" --list 2>&1)"; then
      log "broker ready on $BOOTSTRAP after $((SECONDS - start))s (authenticated as $ADMIN_USER)"
      return 0
    fi
    if [ -f "$PID_FILE" ] && ! is_running; then
      show_log_tail
      die "broker process exited while waiting for it to become ready"
    fi
    # A broker that answers SCRAM with "invalid credentials" is up and will not change its mind.
    if echo "$out" | grep -q 'SaslAuthenticationException'; then
      auth_failures=$((auth_failures + 1))
    else
      auth_failures=0
    fi
    if [ "$SECONDS" -ge "$deadline" ] || [ "$auth_failures" -ge 3 ]; then
      echo "$out" | grep -v '^\s*at ' | tail -n 5 | sed 's/^/[kafka]   metadata check: /' >&2
      show_log_tail
      if echo "$out" | grep -q 'SaslAuthenticationException\|Authentication failed'; then
        log "(the broker rejects $ADMIN_USER's password from $ADMIN_PASSWORD_FILE; '$0 reset' formats the storage again with it)"
      elif echo "$out" | grep -q 'SslAuthenticationException\|SSL handshake failed'; then
        log "(TLS handshake failed: is the broker's certificate signed by $CA_CERT?)"
      fi
      [ "$auth_failures" -lt 3 ] || die "$BOOTSTRAP rejected $ADMIN_USER's SCRAM-SHA-512 login 3 times in a row"
      die "timed out after ${timeout}s: $BOOTSTRAP accepts connections but does not answer metadata requests as $ADMIN_USER"
    fi
    sleep 1
  done
}

cmd_start() {
  if is_running; then
    die_if_legacy_broker_running
    if [ -s "$ADMIN_PASSWORD_FILE" ] && [ -s "$CA_CERT" ]; then
      read_admin_password
      write_client_files
    fi
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
  mkdir -p "$K_STATE"
  ensure_tls
  ensure_admin_password
  check_storage_security
  write_config
  write_client_files

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

  # The super user's SCRAM credential goes into the bootstrap metadata (ignored if the
  # storage is already formatted, which then holds it from its first format). The password
  # is on this JVM's command line for the second it runs: fine on a dev box.
  local out
  if ! out="$(kjava_tool kafka.tools.StorageTool format --config "$CONF_FILE" \
                --cluster-id "$cluster_id" --ignore-formatted \
                --add-scram "SCRAM-SHA-512=[name=$ADMIN_USER,password=$ADMIN_PASSWORD]" 2>&1)"; then
    echo "$out" | sed "s/$ADMIN_PASSWORD/<password>/g; s/^/[kafka]   /" >&2
    die "formatting KRaft storage in $DATA_DIR failed (run '$0 reset' to wipe it if it belongs to another cluster)"
  fi
  echo "$SECURITY_VERSION" >"$SECURITY_MARKER"
  log "storage: $(echo "$out" | tail -n1 | sed "s/$ADMIN_PASSWORD/<password>/g")"

  log "starting Kafka $RESOLVED_VERSION broker on $BOOTSTRAP (SASL_SSL/SCRAM-SHA-512; controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT, mTLS; data $DATA_DIR)"
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
  log "Kafka is up: bootstrap servers $BOOTSTRAP (SASL_SSL, SCRAM-SHA-512, super user $ADMIN_USER)"
  log "  client settings: $ADMIN_ENV (or: eval \"\$($0 env)\"); CLI tools: --command-config $ADMIN_PROPS"
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
  log "deleting $DATA_DIR and the cluster id (the CA, certificates and $ADMIN_USER's password in $TLS_DIR and $SECRETS_DIR are kept)"
  rm -rf "$DATA_DIR" "$CLUSTER_ID_FILE" "$SECURITY_MARKER"
  log "reset done"
}

# Run any Kafka CLI main class against the cached classpath. The broker only talks SASL_SSL,
# so pass the super user's client settings, e.g.
#   kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 \
#     --command-config $K_STATE/admin.properties --list
cmd_tool() {
  [ $# -ge 1 ] || die "usage: $0 tool MAIN_CLASS [ARGS...]"
  require_libs
  exec "$JAVA" -Xms32m -Xmx512m -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$TOOLS_LOG4J" -cp "$LIBS_DIR/*" "$@"
}

# Print admin.env (LAPSE_KAFKA_* client settings as the super user), as written by the last
# start: eval "$(kafka.sh env)", or source the file (set -a; . admin.env; set +a).
cmd_env() {
  [ -s "$ADMIN_ENV" ] \
    || die "no $ADMIN_ENV: the broker for state dir $K_STATE was never started by this kafka.sh; run '$0 start' first"
  if [ ! -s "$ADMIN_PASSWORD_FILE" ] || [ ! -s "$CA_CERT" ]; then
    die "$ADMIN_ENV points at $ADMIN_PASSWORD_FILE and $CA_CERT, but one is missing; run '$0 start' to make them again"
  fi
  cat "$ADMIN_ENV"
}

cmd_logs() {
  [ -f "$SERVER_LOG" ] || die "no broker log at $SERVER_LOG yet"
  tail -n "${1:-100}" "$SERVER_LOG"
}

usage() {
  cat >&2 <<EOF
usage: $0 {install|start|stop|status|wait [SECONDS]|reset|logs [LINES]|env|tool CLASS [ARGS...]}
  install  fetch the Kafka broker jars through Maven into $CACHE_DIR/kafka-<version>/libs (cached)
  start    make the CA, broker certificate and $ADMIN_USER password if needed, format storage
           (with $ADMIN_USER's SCRAM credential) if needed, start the broker, wait until ready
  stop     SIGTERM the broker (SIGKILL after ${KAFKA_STOP_TIMEOUT}s)
  status   print whether the broker runs (exit 0) or not (exit 3), and its address
  wait     wait until the broker answers metadata requests as $ADMIN_USER (default ${KAFKA_WAIT_TIMEOUT}s)
  reset    stop the broker and delete its data (keeps the CA and the password)
  logs     print the last lines of the broker log
  env      print $ADMIN_ENV: LAPSE_KAFKA_* client settings (eval "\$($0 env)")
  tool     run a Kafka CLI class on the cached classpath, e.g.
           $0 tool org.apache.kafka.tools.TopicCommand --bootstrap-server $BOOTSTRAP \\
             --command-config $ADMIN_PROPS --list
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
    env)     cmd_env ;;
    tool)    cmd_tool "$@" ;;
    *)       usage ;;
  esac
}

main "$@"
