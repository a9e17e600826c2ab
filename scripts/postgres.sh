# Sourced by scripts/test and scripts/bench: brings up a local PostgreSQL for tests.
# `ensure_test_database` prints a DATABASE_URL for a role and database it made sure exist.

TEST_PG_USER="${TEST_PG_USER:-tsa_test}"
TEST_PG_PASSWORD="${TEST_PG_PASSWORD:-tsa_test}"
TEST_PG_DB="${TEST_PG_DB:-tsa_test}"
TEST_PG_HOST="${TEST_PG_HOST:-127.0.0.1}"
TEST_PG_PORT="${TEST_PG_PORT:-5432}"

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

pg_version() {
    ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1
}

ensure_postgres_running() {
    if command -v pg_isready >/dev/null && pg_isready -q -h "$TEST_PG_HOST" -p "$TEST_PG_PORT"; then
        return
    fi
    if [ -z "$(pg_version)" ]; then
        if ! command -v apt-get >/dev/null; then
            echo "PostgreSQL is not installed and apt-get is unavailable: install it or set DATABASE_URL" >&2
            exit 1
        fi
        echo "installing PostgreSQL with apt-get…" >&2
        as_root apt-get update -qq >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    local version
    version="$(pg_version)"
    if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version main"; then
        as_root pg_createcluster "$version" main -p "$TEST_PG_PORT" >&2
    fi
    # Tests create many short-lived pools; leave room for them.
    as_root pg_conftool "$version" main set max_connections 300 >&2
    as_root pg_ctlcluster "$version" main start >&2 || as_root pg_ctlcluster "$version" main restart >&2
    for _ in $(seq 1 60); do
        pg_isready -q -h "$TEST_PG_HOST" -p "$TEST_PG_PORT" && return
        sleep 0.5
    done
    echo "PostgreSQL did not come up on $TEST_PG_HOST:$TEST_PG_PORT" >&2
    exit 1
}

ensure_test_database() {
    ensure_postgres_running
    as_postgres psql -q -v ON_ERROR_STOP=1 -p "$TEST_PG_PORT" -d postgres >&2 <<SQL
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L CREATEDB', '$TEST_PG_USER', '$TEST_PG_PASSWORD')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$TEST_PG_USER') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', '$TEST_PG_DB', '$TEST_PG_USER')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$TEST_PG_DB') \gexec
SQL
    echo "postgres://$TEST_PG_USER:$TEST_PG_PASSWORD@$TEST_PG_HOST:$TEST_PG_PORT/$TEST_PG_DB"
}
