#!/usr/bin/env bash
# `make run`: serve on embedded defaults. Qdrant Edge keeps its data in ./data, the local
# MiniLM model embeds, and Redis caches:
# - GROUNDWIRE_REDIS_URL, when set, names the Redis to use (shared deployments set it);
# - otherwise a private redis-server is started here on a Unix socket in ./data (no TCP port
#   at all: nothing already listening is adopted, and two clones never share one), and it is
#   stopped with the service;
# - without redis-server installed the cache is off.
# Either way the log says which Redis is used. Keys are namespaced by the index's identity
# (GROUNDWIRE_REDIS_KEY_PREFIX plus a hash of the Edge shard's id), so a shared Redis never
# mixes two deployments' entries.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
redis_pid=""
cleanup() { [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true; }
trap cleanup EXIT

# Whether a redis-server answers PING on the Unix socket $1.
redis_answers() {
  .venv/bin/python -c '
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.settimeout(0.5)
    s.connect(sys.argv[1])
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
' "$1" 2>/dev/null
}

if [ -n "${GROUNDWIRE_REDIS_URL:-}" ]; then
  # The password, if the URL holds one, stays out of the terminal.
  echo "redis: $(sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#' <<<"$GROUNDWIRE_REDIS_URL") (GROUNDWIRE_REDIS_URL)" >&2
elif command -v redis-server >/dev/null; then
  socket="$PWD/data/redis.sock"
  if [ "${#socket}" -gt 100 ]; then  # a Unix socket path holds at most 107 bytes
    socket="$(mktemp -d)/redis.sock"
  fi
  if [ -S "$socket" ] && redis_answers "$socket"; then
    echo "a redis-server already answers on $socket: another \`make run\` uses this data" \
      "directory; stop it first" >&2
    exit 1
  fi
  rm -f "$socket"
  redis-server --port 0 --unixsocket "$socket" --unixsocketperm 700 --save "" \
    --appendonly no --dir "$PWD/data" --logfile "$PWD/data/redis.log" &
  redis_pid=$!
  for _ in $(seq 100); do
    redis_answers "$socket" && break
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
  done
  if redis_answers "$socket"; then
    export GROUNDWIRE_REDIS_URL="unix://${socket}?db=0"
    echo "redis: private redis-server on $socket (stopped with the service)" >&2
  else
    echo "redis-server did not start (see data/redis.log): the cache is off" >&2
    cleanup
    redis_pid=""
  fi
else
  echo "redis: none (redis-server is not installed): the cache is off" >&2
fi

# exec would drop the trap; run in the foreground and forward signals instead.
.venv/bin/groundwire serve &
server_pid=$!
trap 'kill -TERM "$server_pid" 2>/dev/null' TERM INT
wait "$server_pid" || true
wait "$server_pid" 2>/dev/null || true
