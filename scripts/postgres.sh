# Sourced by scripts/test: makes a PostgreSQL server available to the store tests and exports
# TOPGUN_TEST_PG_URL (an admin URL; each test creates and drops a database of its own).
#
# 1. TOPGUN_TEST_PG_URL already set: used as it is.
# 2. A server answers on 127.0.0.1:5432: used as user postgres (trust auth, as on our machines).
# 3. PostgreSQL is installed but not running: a throwaway cluster is created in a temporary
#    directory, started on a free port, and stopped and deleted when the tests end.
# 4. Not installed: stop with a message saying how to install it.

pg_bin_dir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return
  fi
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return
    fi
  done
}

pg_throwaway_stop() {
  if [ -n "${PG_TMP:-}" ] && [ -d "$PG_TMP" ]; then
    pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_TMP"
  fi
}

# initdb and postgres refuse to run as root: run them as the postgres user then.
pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_free_port() {
  local port
  for port in $(seq 55432 55532); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

if [ -z "${TOPGUN_TEST_PG_URL:-}" ]; then
  if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
    export TOPGUN_TEST_PG_URL="postgres://postgres@127.0.0.1:5432/postgres"
  else
    PG_BIN=$(pg_bin_dir)
    if [ -z "$PG_BIN" ]; then
      echo "error: the store tests need PostgreSQL. Install it (Debian: apt-get install -y postgresql)," >&2
      echo "       start it on 127.0.0.1:5432, or set TOPGUN_TEST_PG_URL to an admin URL of a server." >&2
      exit 1
    fi
    PG_TMP=$(mktemp -d)
    PG_PORT=$(pg_free_port)
    if [ "$(id -u)" = 0 ]; then chown postgres "$PG_TMP"; fi
    echo "PostgreSQL is installed but not running: starting a throwaway server on port $PG_PORT"
    pg_as_owner "$PG_BIN/initdb" -D "$PG_TMP/data" -U postgres -A trust >"$PG_TMP/initdb.log" 2>&1 || {
      cat "$PG_TMP/initdb.log" >&2
      exit 1
    }
    pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w \
      -o "-p $PG_PORT -k $PG_TMP -c listen_addresses=127.0.0.1" start >/dev/null || {
      cat "$PG_TMP/server.log" >&2
      exit 1
    }
    export TOPGUN_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  fi
fi
