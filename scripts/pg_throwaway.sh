#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the store tests and benchmarks (Debian's postgresql package).
#   scripts/pg_throwaway.sh start DIR [PORT]  -> prints the URL (no password in it) and, on the second
#                                                line, the password (give it to libpq as PGPASSWORD)
#   scripts/pg_throwaway.sh stop DIR          -> stops it (by its postmaster.pid) and removes DIR
# Loopback and a unix socket in DIR only; password authentication (scram-sha-256). Run as root, the
# server runs as the unprivileged user 'nobody'; otherwise as the calling user.
set -euo pipefail
cmd=${1:?start or stop}; dir=${2:?folder}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || { echo "pg_throwaway: no /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2; exit 3; }
as_user() { if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }
case $cmd in
start)
  port=${3:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown nobody "$dir"
  pw=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  printf '%s\n' "$pw" > "$dir/pw"; [ "$(id -u)" = 0 ] && chown nobody "$dir/pw"; chmod 600 "$dir/pw"
  as_user "$bin/initdb" -D "$dir/data" -U postgres -A scram-sha-256 --pwfile="$dir/pw" --no-sync -E UTF8 \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
  as_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=60" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  echo "postgresql://postgres@127.0.0.1:$port/postgres"
  echo "$pw"
  ;;
stop)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_user "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null || true
  fi
  rm -rf "$dir"
  ;;
*) echo "pg_throwaway: start DIR [PORT] | stop DIR" >&2; exit 2 ;;
esac
