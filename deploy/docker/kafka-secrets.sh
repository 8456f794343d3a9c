#!/bin/sh
# One-shot of deploy/compose.yml (service kafka-secrets): the Kafka broker's TLS material and
# the super user's password, made the way deploy/local/kafka.sh makes them for the local
# broker, in the kafka-secrets volume:
#
#   private/                      only this job mounts it
#     ca.key, ca.crt              the CA (RSA 3072, 10 years); its key never leaves here
#     broker.key, broker.crt      the broker's key (PKCS#8) and certificate: CN=lapse-kafka-broker,
#                                 SAN DNS:HOSTNAME, serverAuth and clientAuth (the broker shows
#                                 it to its own mTLS controller listener too), 825 days
#     lapse-admin.password        the super user's password: 48 hex characters, no newline
#   broker/                       the kafka container's (owned by BROKER_UID:BROKER_GID)
#     broker.pem                  PEM key store: broker key + certificate + CA certificate
#     ca.crt                      PEM trust store
#     lapse-admin.password        for the inter-broker JAAS line and `kafka-storage.sh format --add-scram`
#   admin/lapse-admin.password    the admin containers' copy (owned by CLIENT_UID:CLIENT_GID):
#                                 kafka-admin and enroll-demo-agent
#   public/ca.crt                 what every client trusts (LAPSE_KAFKA_SSL_CAFILE), 0644
#
# Compose mounts each file (or broker/) into only the container that reads it (volume
# subpaths), so no service sees the CA key or lapse-admin's password. Keys and passwords are
# 0600 from their first byte (umask 077, then an atomic rename into place).
#
# What exists is kept, so certificates and the password survive `down` / `up`: the CA is
# made again only if missing, not matching its key or expiring within a day; the broker
# certificate if missing, not signed by the current CA, expiring within 30 days, not
# matching its key or not naming HOSTNAME. (A new password makes the kafka container format
# its storage again: SCRAM credentials can only be bootstrapped at format time.)
#
# Runs as root in the Lapse image (Debian: the openssl CLI comes with ca-certificates), only
# to hand each file to its reader; as anyone else (the unit test runs it on a temporary
# directory) the files stay the caller's.
#
# usage: kafka-secrets.sh DIR HOSTNAME
# environment: BROKER_UID, BROKER_GID (default 1000: appuser of the apache/kafka image),
#              CLIENT_UID, CLIENT_GID (default 10001: the Lapse image's user)
set -eu

DIR="${1:?usage: kafka-secrets.sh DIR HOSTNAME}"
HOST="${2:?usage: kafka-secrets.sh DIR HOSTNAME}"
BROKER_OWNER="${BROKER_UID:-1000}:${BROKER_GID:-1000}"
CLIENT_OWNER="${CLIENT_UID:-10001}:${CLIENT_GID:-10001}"
BROKER_CN=lapse-kafka-broker
ADMIN_USER=lapse-admin

PRIVATE="$DIR/private"
CA_KEY="$PRIVATE/ca.key"
CA_CERT="$PRIVATE/ca.crt"
BROKER_KEY="$PRIVATE/broker.key"
BROKER_CERT="$PRIVATE/broker.crt"
PASSWORD="$PRIVATE/$ADMIN_USER.password"

log() { echo "[kafka-secrets] $*"; }
die() { echo "[kafka-secrets] ERROR: $*" >&2; exit 1; }

command -v openssl >/dev/null 2>&1 || die "the openssl CLI is missing from this image"
umask 077
IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# chown only as root; otherwise every file stays the caller's (one user reads them all).
own() {
  if [ "$IS_ROOT" -eq 1 ]; then chown "$@"; fi
}

CONFIG="$(mktemp)"
trap 'rm -f "$CONFIG"' EXIT
# Own OpenSSL config (no dependency on the system openssl.cnf, whose defaults would add or
# duplicate extensions); the same extensions as deploy/local/kafka.sh, with the compose host.
cat >"$CONFIG" <<EOF
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
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = DNS:$HOST
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

# run WHAT COMMAND...: quiet on success, openssl's output and a message on failure.
run() {
  what="$1"
  shift
  if ! out="$("$@" 2>&1)"; then
    printf '%s\n' "$out" | sed 's/^/[kafka-secrets]   /' >&2
    die "openssl failed to $what"
  fi
}

key_matches_cert() {
  k="$(openssl pkey -in "$1" -pubout 2>/dev/null)" || return 1
  c="$(openssl x509 -in "$2" -noout -pubkey 2>/dev/null)" || return 1
  [ -n "$k" ] && [ "$k" = "$c" ]
}

# Staging files live next to their destination, so `mv` is an atomic rename.
staged() { mktemp "$1.XXXXXX"; }

gen_ca() {
  key="$(staged "$CA_KEY")"
  crt="$(staged "$CA_CERT")"
  run "create the CA key" openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$key"
  run "create the CA certificate" openssl req -x509 -new -config "$CONFIG" -extensions v3_ca \
    -key "$key" -subj "/CN=Lapse compose Kafka CA" -sha256 -days 3650 \
    -set_serial "0x$(openssl rand -hex 16)" -out "$crt"
  chmod 644 "$crt"
  mv -f "$key" "$CA_KEY"
  mv -f "$crt" "$CA_CERT"
}

gen_broker_cert() {
  key="$(staged "$BROKER_KEY")"
  csr="$(staged "$BROKER_CERT.csr")"
  crt="$(staged "$BROKER_CERT")"
  # genpkey writes PKCS#8 ("BEGIN PRIVATE KEY"), the only key format Kafka's PEM store reads.
  run "create the broker key" openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key"
  run "create the broker certificate request" openssl req -new -config "$CONFIG" -key "$key" \
    -subj "/CN=$BROKER_CN" -out "$csr"
  run "sign the broker certificate" openssl x509 -req -in "$csr" -CA "$CA_CERT" -CAkey "$CA_KEY" \
    -set_serial "0x$(openssl rand -hex 16)" -sha256 -days 825 \
    -extfile "$CONFIG" -extensions v3_broker -out "$crt"
  rm -f "$csr"
  chmod 644 "$crt"
  mv -f "$key" "$BROKER_KEY"
  mv -f "$crt" "$BROKER_CERT"
}

names_host() {
  openssl x509 -in "$BROKER_CERT" -noout -ext subjectAltName 2>/dev/null \
    | tr ',' '\n' | sed 's/^[[:space:]]*//' | grep -qx "DNS:$HOST"
}

# Why the broker certificate must be made again, or nothing if it is fine.
broker_cert_problem() {
  if [ ! -s "$BROKER_KEY" ] || [ ! -s "$BROKER_CERT" ]; then
    echo "it does not exist yet"
  elif ! openssl verify -CAfile "$CA_CERT" -purpose sslserver "$BROKER_CERT" >/dev/null 2>&1 \
       || ! openssl verify -CAfile "$CA_CERT" -purpose sslclient "$BROKER_CERT" >/dev/null 2>&1; then
    echo "it was not signed by the current CA (or has expired)"
  elif ! openssl x509 -in "$BROKER_CERT" -noout -checkend $((30 * 86400)) >/dev/null 2>&1; then
    echo "it expires within 30 days"
  elif ! key_matches_cert "$BROKER_KEY" "$BROKER_CERT"; then
    echo "it does not match its key"
  elif ! names_host; then
    echo "it does not name DNS:$HOST"
  fi
}

# publish MODE OWNER DEST FILE...: the concatenation of FILE... becomes DEST (staged with
# umask 077, chmod/chown, then renamed), unless DEST already holds exactly that. An unchanged
# file keeps its inode, so a container that mounts it as a single file keeps seeing it.
publish() {
  mode="$1" owner="$2" dest="$3"
  shift 3
  tmp="$(staged "$dest")"
  cat "$@" >"$tmp"
  chmod "$mode" "$tmp"
  own "$owner" "$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
    chmod "$mode" "$dest"
    own "$owner" "$dest"
  else
    mv -f "$tmp" "$dest"
  fi
}

mkdir -p "$PRIVATE" "$DIR/broker" "$DIR/admin" "$DIR/public"
chmod 700 "$DIR" "$PRIVATE" "$DIR/broker" "$DIR/admin"
chmod 755 "$DIR/public"
own "$BROKER_OWNER" "$DIR/broker"

if [ ! -s "$CA_KEY" ] || [ ! -s "$CA_CERT" ] || ! key_matches_cert "$CA_KEY" "$CA_CERT"; then
  log "creating the CA (clients trust public/ca.crt)"
  gen_ca
elif ! openssl x509 -in "$CA_CERT" -noout -checkend 86400 >/dev/null 2>&1; then
  log "the CA expires within a day; creating a new one"
  gen_ca
fi
problem="$(broker_cert_problem)"
if [ -n "$problem" ]; then
  log "creating the broker certificate ($problem): CN=$BROKER_CN, SAN DNS:$HOST"
  gen_broker_cert
fi

if [ ! -s "$PASSWORD" ]; then
  log "creating a random password for the Kafka super user $ADMIN_USER"
  tmp="$(staged "$PASSWORD")"
  printf '%s' "$(openssl rand -hex 24)" >"$tmp"
  mv -f "$tmp" "$PASSWORD"
fi
# It goes into a JAAS line and --add-scram's [name=...,password=...] syntax unquoted.
case "$(tr -d ' \t\r\n' <"$PASSWORD")" in
  "" | *[!A-Za-z0-9._~-]*)
    die "$PASSWORD must hold letters, digits and . _ ~ - only; delete it to get a new random one" ;;
esac

publish 600 "$BROKER_OWNER" "$DIR/broker/broker.pem" "$BROKER_KEY" "$BROKER_CERT" "$CA_CERT"
publish 644 "$BROKER_OWNER" "$DIR/broker/ca.crt" "$CA_CERT"
publish 600 "$BROKER_OWNER" "$DIR/broker/$ADMIN_USER.password" "$PASSWORD"
publish 600 "$CLIENT_OWNER" "$DIR/admin/$ADMIN_USER.password" "$PASSWORD"
publish 644 0:0 "$DIR/public/ca.crt" "$CA_CERT"
log "ready: broker certificate for DNS:$HOST, CA $(openssl x509 -in "$CA_CERT" -noout -fingerprint -sha256 | sed 's/.*=//')"
