#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL cluster for the store tests and bench.
#
# Usage (as root, on Debian):   eval "$(.ci/postgres.sh)"
#
# Everything human-readable goes to stderr; the only thing printed on stdout is
# the `export DHT_HUNTER_TEST_PG=...` line, so the output can be eval'ed.
# Running it twice is harmless: an existing cluster is reused (and started if it
# is down), and the role/database are created only when missing.
#
# Knobs (environment): PG_PORT (default 25432, below the ephemeral port
# range so that no short-lived loopback socket can take it while the server
# is stopped; if taken by something that is
# not our cluster, the next free port is used), PG_CLUSTER (default dhthunter),
# PG_USER, PG_PASSWORD, PG_DB.
set -euo pipefail

CLUSTER=${PG_CLUSTER:-dhthunter}
PORT=${PG_PORT:-25432}
PGUSER_NAME=${PG_USER:-dht_hunter}
PGPASS=${PG_PASSWORD:-dht_hunter_test}
PGDB=${PG_DB:-dht_hunter_test}

log() { echo "postgres.sh: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (it installs packages and runs commands as the postgres user)"
    exit 1
fi

if ! command -v pg_createcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing PostgreSQL from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    # The package's postinst may try to start the default cluster; that is fine.
    apt-get install -y postgresql >&2
fi

VERSION=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
log "PostgreSQL major version $VERSION"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Our cluster, if it already exists: "VER NAME PORT STATUS ...".
EXISTING=$(pg_lsclusters --no-header 2>/dev/null | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c {print $3}')
if [ -n "$EXISTING" ]; then
    PORT=$EXISTING
    log "reusing cluster $VERSION/$CLUSTER on port $PORT"
else
    while port_in_use "$PORT"; do
        log "port $PORT is in use, trying $((PORT + 1))"
        PORT=$((PORT + 1))
    done
    log "creating cluster $VERSION/$CLUSTER on port $PORT"
    pg_createcluster "$VERSION" "$CLUSTER" --port "$PORT" --start-conf manual \
        -- --auth-local=peer --auth-host=scram-sha-256 >&2
    CONF=/etc/postgresql/$VERSION/$CLUSTER/postgresql.conf
    {
        echo "listen_addresses = '127.0.0.1'"
        # Durability settings are left at their defaults so that bench numbers
        # taken against this cluster mean something.
        echo "max_connections = 200"
    } >>"$CONF"
fi

STATUS=$(pg_lsclusters --no-header | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c {print $4}')
if [ "$STATUS" != "online" ]; then
    log "starting cluster $VERSION/$CLUSTER"
    pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi

for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p "$PORT"; then break; fi
    sleep 0.5
done
pg_isready -h 127.0.0.1 -p "$PORT" >&2

psql_admin() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" "$@"; }

if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$PGUSER_NAME'")" != "1" ]; then
    log "creating role $PGUSER_NAME"
    psql_admin -c "CREATE ROLE \"$PGUSER_NAME\" LOGIN PASSWORD '$PGPASS'" >&2
else
    psql_admin -c "ALTER ROLE \"$PGUSER_NAME\" LOGIN PASSWORD '$PGPASS'" >&2
fi
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PGDB'")" != "1" ]; then
    log "creating database $PGDB"
    psql_admin -c "CREATE DATABASE \"$PGDB\" OWNER \"$PGUSER_NAME\"" >&2
fi

echo "export DHT_HUNTER_TEST_PG=postgres://$PGUSER_NAME:$PGPASS@127.0.0.1:$PORT/$PGDB"
