#!/bin/sh
# The kafka container's command (deploy/compose.yml, apache/kafka image): one KRaft node,
# broker and controller, secured like deploy/local/kafka.sh's broker. The image's own
# start-up (/etc/kafka/docker/run) formats the storage without SCRAM credentials, and they
# can only be bootstrapped at format time, so this writes server.properties itself, formats
# with the super user's credential (`kafka-storage.sh format --add-scram`) and starts the
# broker.
#
#   CLIENT      :9092, advertised as HOSTNAME:9092: SASL_SSL with SCRAM-SHA-512 (SCRAM-SHA-256
#               enabled too); every client, Kafka's CLI tools and inter-broker traffic (as
#               lapse-admin)
#   CONTROLLER  :9093, SSL with ssl.client.auth=required: only a certificate signed by the
#               compose CA gets in, i.e. the broker's own (User:CN=lapse-kafka-broker). Kafka
#               does not support SCRAM on KRaft controller listeners (KAFKA-15513), hence mTLS.
#   StandardAuthorizer, allow.everyone.if.no.acl.found=false, super.users lapse-admin and the
#   broker's certificate; topics are never created automatically.
#
# Reads (written by deploy/docker/kafka-secrets.sh, mounted read-only):
#   $SECRETS/broker.pem, ca.crt, lapse-admin.password
# Writes $CONFIG/server.properties and $CONFIG/admin.properties (the healthcheck's and Kafka CLI
# tools' client settings as lapse-admin), both 0600: they hold the password.
#
# The data volume remembers which security layout and which lapse-admin password it was
# formatted with (lapse-security.version, beside the log dir): a volume formatted by the old
# PLAINTEXT compose file, or for another password (the kafka-secrets volume was dropped), is
# wiped and formatted again, as deploy/local/kafka.sh does; the kafka-admin job then creates
# the topics, credentials and ACLs again.
#
# environment: CLUSTER_ID (required), BROKER_HOSTNAME (default kafka); for a run outside the
# image: BROKER_KAFKA_HOME (/opt/kafka), BROKER_SECRETS_DIR (/etc/kafka/secrets),
# BROKER_DATA_DIR (/var/lib/kafka/data), BROKER_CONFIG_DIR (/tmp/lapse-kafka),
# BROKER_CLIENT_PORT (9092), BROKER_CONTROLLER_PORT (9093)
set -eu

CLUSTER_ID="${CLUSTER_ID:?CLUSTER_ID must be set}"
HOST="${BROKER_HOSTNAME:-kafka}"
KAFKA_DIST="${BROKER_KAFKA_HOME:-/opt/kafka}"
SECRETS="${BROKER_SECRETS_DIR:-/etc/kafka/secrets}"
DATA="${BROKER_DATA_DIR:-/var/lib/kafka/data}"
CONFIG="${BROKER_CONFIG_DIR:-/tmp/lapse-kafka}"
CLIENT_PORT="${BROKER_CLIENT_PORT:-9092}"
CONTROLLER_PORT="${BROKER_CONTROLLER_PORT:-9093}"
ADMIN_USER=lapse-admin
BROKER_PRINCIPAL="User:CN=lapse-kafka-broker"
LOG_DIRS="$DATA/kraft"
MARKER="$DATA/lapse-security.version"
SECURITY_VERSION="1 sasl_ssl-scram-sha-512 mtls-controller standard-authorizer"

log() { echo "[kafka] $*"; }
die() { echo "[kafka] ERROR: $*" >&2; exit 1; }

for file in broker.pem ca.crt "$ADMIN_USER.password"; do
  [ -r "$SECRETS/$file" ] \
    || die "cannot read $SECRETS/$file as uid $(id -u) (written by the kafka-secrets job)"
done
PASSWORD="$(tr -d ' \t\r\n' <"$SECRETS/$ADMIN_USER.password")"
case "$PASSWORD" in
  "" | *[!A-Za-z0-9._~-]*) die "$SECRETS/$ADMIN_USER.password must hold letters, digits and . _ ~ - only" ;;
esac
JAAS="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$ADMIN_USER\" password=\"$PASSWORD\";"

umask 077
mkdir -p "$CONFIG"
chmod 700 "$CONFIG"

cat >"$CONFIG/server.properties" <<EOF
# Written by deploy/docker/kafka-broker.sh on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
controller.listener.names=CONTROLLER

listeners=CLIENT://:$CLIENT_PORT,CONTROLLER://:$CONTROLLER_PORT
advertised.listeners=CLIENT://$HOST:$CLIENT_PORT
listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SSL
inter.broker.listener.name=CLIENT
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=$JAAS
listener.name.client.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.client.ssl.client.auth=none
listener.name.controller.ssl.client.auth=required

# TLS from PEM files: broker.pem = PKCS#8 key + certificate + CA. The same key store is the
# server side of both listeners and the client side of the connection to the controller;
# the broker checks that the certificate it is shown names $HOST.
ssl.keystore.type=PEM
ssl.keystore.location=$SECRETS/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$SECRETS/ca.crt
ssl.endpoint.identification.algorithm=https

# Whatever no ACL allows is denied; the super users bypass ACLs.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$ADMIN_USER;$BROKER_PRINCIPAL

log.dirs=$LOG_DIRS

# One broker: every internal topic must live with replication factor 1.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1

num.partitions=3
# Topics are created explicitly (by the kafka-admin job), never by a produce or fetch.
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
EOF

cat >"$CONFIG/admin.properties" <<EOF
# Kafka's CLI tools as the super user $ADMIN_USER (written by deploy/docker/kafka-broker.sh):
#   $KAFKA_DIST/bin/kafka-topics.sh --bootstrap-server $HOST:$CLIENT_PORT --command-config $CONFIG/admin.properties --list
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$JAAS
ssl.truststore.type=PEM
ssl.truststore.location=$SECRETS/ca.crt
EOF

# Which layout and password the storage was formatted with. The password's fingerprint
# (16 hex digits of its SHA-256; the password is 192 random bits) only tells whether it
# changed; the volume is the broker's alone.
fingerprint="$(printf '%s' "$PASSWORD" | sha256sum | cut -c1-16)"
expected="$SECURITY_VERSION admin-password-sha256:$fingerprint"
if [ "$(cat "$MARKER" 2>/dev/null || true)" != "$expected" ]; then
  leftovers=0
  for entry in "$DATA"/* "$DATA"/.[!.]* "$DATA"/..?*; do
    if [ -e "$entry" ] || [ -L "$entry" ]; then leftovers=1; fi
  done
  if [ "$leftovers" -eq 1 ]; then
    if [ -f "$MARKER" ]; then
      log "wiping $DATA: it was formatted for another lapse-admin password or security layout"
    else
      log "wiping $DATA: it was formatted without SCRAM credentials (the old PLAINTEXT set-up)"
    fi
    log "(SCRAM credentials can only be added at format time; topics and offsets are lost, kafka-admin makes them again)"
    for entry in "$DATA"/* "$DATA"/.[!.]* "$DATA"/..?*; do
      if [ -e "$entry" ] || [ -L "$entry" ]; then rm -rf "$entry"; fi
    done
  fi
fi

# The super user's SCRAM credential goes into the bootstrap metadata (ignored if the storage
# is formatted already, which then holds it from its first format). The password is on the
# format tool's command line for the second it runs, inside this container only.
mkdir -p "$LOG_DIRS"
if ! out="$("$KAFKA_DIST/bin/kafka-storage.sh" format --config "$CONFIG/server.properties" \
              --cluster-id "$CLUSTER_ID" --ignore-formatted \
              --add-scram "SCRAM-SHA-512=[name=$ADMIN_USER,password=$PASSWORD]" 2>&1)"; then
  printf '%s\n' "$out" | sed "s/$PASSWORD/<password>/g; s/^/[kafka]   /" >&2
  die "formatting the KRaft storage in $LOG_DIRS failed"
fi
printf '%s\n' "$out" | tail -n 1 | sed "s/$PASSWORD/<password>/g; s/^/[kafka] storage: /"
printf '%s\n' "$expected" >"$MARKER"

log "starting the broker: CLIENT $HOST:$CLIENT_PORT (SASL_SSL, SCRAM-SHA-512), CONTROLLER :$CONTROLLER_PORT (mTLS)"
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
exec "$KAFKA_DIST/bin/kafka-server-start.sh" "$CONFIG/server.properties"
