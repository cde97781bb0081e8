#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests (initdb + pg_ctl in a temporary folder, run by
# a non-root user, on 127.0.0.1:${SHALLOW_PG_PORT:-55432}) and prints the line to eval:
#   eval "$(scripts/pg-test-server.sh)"    # sets SHALLOW_TEST_PG
# Needs the server binaries: apt-get install postgresql. A server already running there is reused.
# SHALLOW_TEST_PG_DATA and SHALLOW_TEST_PG_BIN let the chaos test restart the server.
set -euo pipefail
port=${SHALLOW_PG_PORT:-55432}
url="postgres://shallow:shallow-test@127.0.0.1:$port/postgres"
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[ -n "$bin" ] || bin=$(dirname "$(command -v initdb || echo /nonexistent/initdb)")
if [ ! -x "$bin/initdb" ]; then
  echo "PostgreSQL tests need the server binaries (initdb, pg_ctl): apt-get install postgresql" >&2
  exit 1
fi
state=/tmp/shallow-pg-$port.env
if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null; then
  if [ -f "$state" ]; then cat "$state"; else echo "export SHALLOW_TEST_PG='$url'"; fi
  exit 0
fi
dir=$(mktemp -d /tmp/shallow-pg.XXXXXX)
run_as=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$dir"
  run_as=(runuser -u postgres --)
fi
echo shallow-test > "$dir/pw"
chmod 644 "$dir/pw"
"${run_as[@]}" "$bin/initdb" -D "$dir/data" -U shallow --pwfile="$dir/pw" \
  --auth=scram-sha-256 >/dev/null
"${run_as[@]}" "$bin/pg_ctl" -s -D "$dir/data" -l "$dir/log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >&2
echo "export SHALLOW_TEST_PG='$url' SHALLOW_TEST_PG_DATA='$dir/data' SHALLOW_TEST_PG_BIN='$bin'" \
  | tee "$state"
