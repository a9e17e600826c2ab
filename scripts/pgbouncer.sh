# Sourced by scripts/test, after scripts/postgres.sh: brings up a PgBouncer in transaction
# pooling mode in front of the test PostgreSQL. `ensure_pgbouncer` prints a PGBOUNCER_URL.
#
# The instance is this script's own, not Debian's pgbouncer service: it listens on
# 127.0.0.1:$TEST_PGBOUNCER_PORT (6433), and its configuration, user list, pid file and log are
# in $TEST_PGBOUNCER_DIR. Any database name is passed through to the PostgreSQL at
# $TEST_PG_HOST:$TEST_PG_PORT (tests make a database each), as the test role, whose password
# the user list holds so that PgBouncer can answer PostgreSQL's SCRAM challenge. Idempotent:
# a running instance is told to reload its configuration, a missing one is started (as the
# postgres user: PgBouncer refuses to run as root); pgbouncer is installed with apt-get when
# missing. It fails loudly when the instance does not accept a connection.

TEST_PGBOUNCER_PORT="${TEST_PGBOUNCER_PORT:-6433}"
TEST_PGBOUNCER_DIR="${TEST_PGBOUNCER_DIR:-${TMPDIR:-/tmp}/tower-session-auth-pgbouncer-$TEST_PGBOUNCER_PORT}"

pgbouncer_binary() {
    command -v pgbouncer || { [ -x /usr/sbin/pgbouncer ] && echo /usr/sbin/pgbouncer; } || true
}

ensure_pgbouncer() {
    if [ -z "$(pgbouncer_binary)" ]; then
        if ! command -v apt-get >/dev/null; then
            echo "pgbouncer is not installed and apt-get is unavailable: install it or set PGBOUNCER_URL" >&2
            exit 1
        fi
        echo "installing pgbouncer with apt-get…" >&2
        as_root apt-get update -qq >&2
        # The package's own service is not used (nor started, where there is no init system).
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >&2
    fi
    local binary dir
    binary="$(pgbouncer_binary)"
    dir="$TEST_PGBOUNCER_DIR"
    as_root mkdir -p "$dir"
    as_root chown postgres "$dir"
    as_root chmod 700 "$dir"
    as_root tee "$dir/userlist.txt" >/dev/null <<EOF
"$TEST_PG_USER" "$TEST_PG_PASSWORD"
EOF
    as_root tee "$dir/pgbouncer.ini" >/dev/null <<EOF
[databases]
* = host=$TEST_PG_HOST port=$TEST_PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $TEST_PGBOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
stats_users = $TEST_PG_USER
max_client_conn = 2000
default_pool_size = 10
autodb_idle_timeout = 60
log_connections = 0
log_disconnections = 0
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
    as_root chown postgres "$dir/userlist.txt" "$dir/pgbouncer.ini"
    as_root chmod 600 "$dir/userlist.txt"
    local pid
    pid="$(cat "$dir/pgbouncer.pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        # Running: take the configuration as written now.
        as_root kill -HUP "$pid"
    else
        if ! as_postgres "$binary" -d "$dir/pgbouncer.ini" >&2; then
            echo "pgbouncer did not start; its log ($dir/pgbouncer.log):" >&2
            tail -n 20 "$dir/pgbouncer.log" >&2 || true
            exit 1
        fi
    fi
    # Up when this instance runs, its console reports transaction pooling (so the port is not
    # another server's), and a query goes through it to PostgreSQL.
    local url="postgres://$TEST_PG_USER:$TEST_PG_PASSWORD@127.0.0.1:$TEST_PGBOUNCER_PORT/$TEST_PG_DB"
    local console="postgres://$TEST_PG_USER:$TEST_PG_PASSWORD@127.0.0.1:$TEST_PGBOUNCER_PORT/pgbouncer"
    for _ in $(seq 1 40); do
        pid="$(cat "$dir/pgbouncer.pid" 2>/dev/null || true)"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
            [ "$(psql "$console" -Atqc "SHOW CONFIG" 2>/dev/null |
                awk -F'|' '$1 == "pool_mode" { print $2 }')" = transaction ] &&
            psql "$url" -Atqc "SELECT 1" >/dev/null 2>&1; then
            echo "$url"
            return
        fi
        sleep 0.5
    done
    echo "PgBouncer did not come up on 127.0.0.1:$TEST_PGBOUNCER_PORT in transaction pooling mode; its log ($dir/pgbouncer.log):" >&2
    tail -n 20 "$dir/pgbouncer.log" >&2 || true
    exit 1
}
