#!/usr/bin/env bash
# Kafka ACLs for inlet: one principal per stage, each allowed exactly what that stage reads and
# writes (deploy/kafka/README.md has the table and the reasons). Run it with an admin client of
# the cluster, against brokers whose authorizer denies what no ACL allows
# (allow.everyone.if.no.acl.found=false: Apache Kafka's default, not Amazon MSK's).
#
#   # needs: Kafka CLI (kafka-acls.sh on PATH, or KAFKA_ACLS=/opt/kafka/bin/kafka-acls.sh)
#   KAFKA=b-1.kafka.example.com:9096 COMMAND_CONFIG=admin.properties deploy/kafka/acls.sh add
#   KAFKA=... COMMAND_CONFIG=... deploy/kafka/acls.sh list
#   DRY_RUN=1 deploy/kafka/acls.sh add      # print the commands, run nothing
#
# Actions: add (default), remove (the same ACLs, without asking), list (each principal's ACLs).
#
# Settings, from the environment:
#   KAFKA               bootstrap servers of the admin listener (required unless DRY_RUN=1)
#   COMMAND_CONFIG      client properties file for the admin connection (TLS, SASL), optional
#   PREFIX              topic prefix, inlet's kafka.topic_prefix (default inlet.)
#   INGEST_PRINCIPAL, ROUTER_PRINCIPAL, WORKERS_PRINCIPAL, REPORTER_PRINCIPAL
#                       (default User:inlet-ingest, User:inlet-router, User:inlet-workers,
#                       User:inlet-reporter); set one to "" to skip that stage
#   OPERATOR_PRINCIPAL  principal of people running `inlet replay` and `inlet tail` (default: none)
#   ROUTER_GROUP, WORKERS_GROUP, REPORTER_GROUP
#                       consumer groups, router.group_id etc. (default inlet-router, inlet-workers,
#                       inlet-reporter)
#   GRANT_CREATE=1      also allow every stage to create topics under PREFIX (kafka.create_topics);
#                       default 0: create the topics yourself (docs/operations.md)
#   IDEMPOTENT_WRITE=0  leave out IdempotentWrite on the cluster (needed by idempotent producers on
#                       brokers before Apache Kafka 2.8 only; harmless after)
set -euo pipefail

action=${1:-add}
case $action in
  add | remove | list) ;;
  *)
    echo "usage: $0 [add|remove|list]" >&2
    exit 2
    ;;
esac

dry_run=${DRY_RUN:-0}
if [[ $dry_run == 1 ]]; then
  kafka=${KAFKA:-KAFKA}
else
  kafka=${KAFKA:?set KAFKA to the bootstrap servers (or DRY_RUN=1)}
fi
command_config=${COMMAND_CONFIG:-}
acls_cmd=${KAFKA_ACLS:-kafka-acls.sh}
prefix=${PREFIX-inlet.}
ingest=${INGEST_PRINCIPAL-User:inlet-ingest}
router=${ROUTER_PRINCIPAL-User:inlet-router}
workers=${WORKERS_PRINCIPAL-User:inlet-workers}
reporter=${REPORTER_PRINCIPAL-User:inlet-reporter}
operator=${OPERATOR_PRINCIPAL:-}
router_group=${ROUTER_GROUP:-inlet-router}
workers_group=${WORKERS_GROUP:-inlet-workers}
reporter_group=${REPORTER_GROUP:-inlet-reporter}
# Every process follows the control log (and ingest the delivery log) with a consumer that
# assigns partitions itself, in this group, which is fixed in inlet's code. It never commits
# offsets, but librdkafka looks up the coordinator of any consumer with a group.id.
reader_group=inlet-reader
grant_create=${GRANT_CREATE:-0}
idempotent_write=${IDEMPOTENT_WRITE:-1}

run() {
  local command=("$acls_cmd" --bootstrap-server "$kafka")
  if [[ -n $command_config ]]; then
    command+=(--command-config "$command_config")
  fi
  command+=("$@")
  if [[ $dry_run == 1 ]]; then
    printf '%q ' "${command[@]}"
    printf '\n'
  else
    "${command[@]}"
  fi
}

# allow PRINCIPAL RESOURCE-OPTIONS... --operation OP...
allow() {
  local principal=$1
  shift
  case $action in
    add) run --add --allow-principal "$principal" "$@" ;;
    remove) run --remove --force --allow-principal "$principal" "$@" ;;
  esac
}

topic() { printf '%s%s' "$prefix" "$1"; }

reads() { # PRINCIPAL TOPIC...
  local principal=$1 name
  shift
  for name in "$@"; do
    allow "$principal" --topic "$(topic "$name")" --operation Read
  done
}

writes() { # PRINCIPAL TOPIC...
  local principal=$1 name
  shift
  for name in "$@"; do
    allow "$principal" --topic "$(topic "$name")" --operation Write
  done
}

groups() { # PRINCIPAL GROUP...
  local principal=$1 group
  shift
  for group in "$@"; do
    allow "$principal" --group "$group" --operation Read
  done
}

# What every stage needs: at startup it checks that each topic it uses exists (metadata,
# which lists only the topics a principal may Describe; one it cannot see counts as missing
# and inlet tries to create it) and reads the control topic's cleanup.policy (it refuses a
# compacted control log), and its producer is idempotent.
common() {
  local principal=$1
  allow "$principal" --resource-pattern-type prefixed --topic "$prefix" --operation Describe
  allow "$principal" --topic "$(topic control)" --operation DescribeConfigs
  if [[ $grant_create == 1 ]]; then
    allow "$principal" --resource-pattern-type prefixed --topic "$prefix" --operation Create
  fi
  if [[ $idempotent_write == 1 ]]; then
    allow "$principal" --cluster --operation IdempotentWrite
  fi
  groups "$principal" "$reader_group"
}

if [[ $action == list ]]; then
  for principal in "$ingest" "$router" "$workers" "$reporter" "$operator"; do
    if [[ -n $principal ]]; then
      run --list --principal "$principal"
    fi
  done
  exit 0
fi

# ingest: webhooks in, the admin API (the only writer of the control log: the root of trust, and
# of its snapshots, which every stage reads at startup),
# manual runs, redelivery (reads a stored webhook, writes it again), the delivery log.
if [[ -n $ingest ]]; then
  common "$ingest"
  reads "$ingest" control control-snapshots deliveries webhooks
  writes "$ingest" control control-snapshots webhooks triggers deliveries
fi

# router: webhooks → triggers. Reconciliation: the last-seen heads (inlet.heads, read back from
# the start, written as webhooks are routed; DescribeConfigs to warn when it is not compacted),
# and the deliveries Bitbucket never made, written to inlet.webhooks like a webhook.
if [[ -n $router ]]; then
  common "$router"
  reads "$router" webhooks control control-snapshots heads
  writes "$router" webhooks triggers deliveries dlq heads
  allow "$router" --topic "$(topic heads)" --operation DescribeConfigs
  groups "$router" "$router_group"
fi

# workers: triggers → run decisions.
if [[ -n $workers ]]; then
  common "$workers"
  reads "$workers" triggers control control-snapshots
  writes "$workers" runs deliveries dlq
  groups "$workers" "$workers_group"
fi

# reporter: run decisions and schedulers' run updates → Bitbucket build statuses, the delivery log.
if [[ -n $reporter ]]; then
  common "$reporter"
  reads "$reporter" runs run-updates control control-snapshots
  writes "$reporter" deliveries dlq
  groups "$reporter" "$reporter_group"
fi

# operators: `inlet tail` reads runs, deliveries, triggers and dead letters; `inlet replay` reads
# webhooks and the control log's end offset and writes webhooks again.
if [[ -n $operator ]]; then
  common "$operator"
  reads "$operator" webhooks runs deliveries triggers dlq
  writes "$operator" webhooks
fi
