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

# A cluster that accepts only TLS connections, for the TLS tests: `ensure_tls_database`
# (re)configures it and prints its URL; its server certificate, for `localhost` only, is signed
# by a CA whose certificate is at `tls_root_cert`. pg_hba.conf has `hostssl` rules for the test
# role (password) and `hostnossl ... reject` for everything else. Idempotent: the cluster and
# the certificates are made once (the certificates again when they expire within a week).
TLS_PG_CLUSTER="${TLS_PG_CLUSTER:-tsa_tls}"
TLS_PG_PORT="${TLS_PG_PORT:-5437}"
TLS_PG_ROLE="${TLS_PG_ROLE:-tsa_tls}"

tls_dir() {
    echo "/etc/postgresql/$(pg_version)/$TLS_PG_CLUSTER/tls"
}

tls_root_cert() {
    echo "$(tls_dir)/ca.crt"
}

# A CA and a server certificate for `localhost` (no IP address), signed by it; the CA's key is
# not kept.
make_tls_certificates() {
    local dir work
    dir="$(tls_dir)"
    work="$(mktemp -d)"
    (
        cd "$work"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
            -subj "/CN=tower-session-auth test CA" -keyout ca.key -out ca.crt \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
        printf '%s\n' "subjectAltName=DNS:localhost" "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile server.ext -out server.crt 2>/dev/null
    )
    as_root install -d -m 0755 "$dir"
    as_root install -m 0644 "$work/ca.crt" "$dir/ca.crt"
    as_root install -m 0644 "$work/server.crt" "$dir/server.crt"
    as_root install -m 0600 -o postgres -g postgres "$work/server.key" "$dir/server.key"
    rm -rf "$work"
}

ensure_tls_database() {
    ensure_postgres_running
    local version dir
    version="$(pg_version)"
    dir="$(tls_dir)"
    if ! command -v openssl >/dev/null; then
        echo "installing openssl with apt-get…" >&2
        as_root apt-get update -qq >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >&2
    fi
    if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version $TLS_PG_CLUSTER"; then
        as_root pg_createcluster "$version" "$TLS_PG_CLUSTER" -p "$TLS_PG_PORT" -- --no-sync >&2
    fi
    if ! as_root test -s "$dir/server.key" ||
        ! openssl x509 -checkend 604800 -noout -in "$dir/server.crt" >/dev/null 2>&1; then
        make_tls_certificates >&2
    fi
    local conf="as_root pg_conftool -s $version $TLS_PG_CLUSTER set"
    $conf port "$TLS_PG_PORT" >&2
    $conf fsync off >&2
    $conf ssl on >&2
    $conf ssl_cert_file "$dir/server.crt" >&2
    $conf ssl_key_file "$dir/server.key" >&2
    as_root tee "/etc/postgresql/$version/$TLS_PG_CLUSTER/pg_hba.conf" >/dev/null <<HBA
# Written by scripts/postgres.sh (ensure_tls_database): TLS connections only.
local     all  postgres                 peer
hostssl   all  $TLS_PG_ROLE  127.0.0.1/32  scram-sha-256
hostssl   all  $TLS_PG_ROLE  ::1/128       scram-sha-256
hostnossl all  all           0.0.0.0/0     reject
hostnossl all  all           ::/0          reject
HBA
    if pg_lsclusters -h | awk '{print $1" "$2" "$4}' | grep -qx "$version $TLS_PG_CLUSTER online"; then
        as_root pg_ctlcluster "$version" "$TLS_PG_CLUSTER" reload >&2
    else
        as_root pg_ctlcluster "$version" "$TLS_PG_CLUSTER" start >&2
    fi
    for _ in $(seq 1 60); do
        pg_isready -q -h localhost -p "$TLS_PG_PORT" && break
        sleep 0.5
    done
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$TLS_PG_PORT" -d postgres >&2 <<SQL
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', '$TLS_PG_ROLE', '$TLS_PG_ROLE')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$TLS_PG_ROLE') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', '$TLS_PG_ROLE', '$TLS_PG_ROLE')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$TLS_PG_ROLE') \gexec
SQL
    if [ "$(as_postgres psql -X -t -A -p "$TLS_PG_PORT" -d postgres -c 'SHOW ssl')" != on ]; then
        echo "the TLS cluster $TLS_PG_CLUSTER on port $TLS_PG_PORT does not have ssl on" >&2
        exit 1
    fi
    echo "postgres://$TLS_PG_ROLE:$TLS_PG_ROLE@localhost:$TLS_PG_PORT/$TLS_PG_ROLE"
}
