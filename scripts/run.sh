#!/usr/bin/env bash
# `make run`: serve on embedded defaults. Qdrant Edge keeps its data in ./data, the local
# MiniLM model embeds, and Redis caches when one is present: GROUNDWIRE_REDIS_URL if set,
# else a redis-server already on 127.0.0.1:6379, else a private redis-server started here
# (and stopped with the service) when the binary is installed. Without one the cache is off.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
redis_pid=""
if [ -z "${GROUNDWIRE_REDIS_URL:-}" ]; then
  if (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    export GROUNDWIRE_REDIS_URL="redis://127.0.0.1:6379/0"
  elif command -v redis-server >/dev/null; then
    port=6390
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$PWD/data" --logfile "$PWD/data/redis.log" &
    redis_pid=$!
    export GROUNDWIRE_REDIS_URL="redis://127.0.0.1:${port}/0"
  else
    echo "no Redis found: the retrieval cache is off" >&2
  fi
fi
cleanup() { [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true; }
trap cleanup EXIT
# exec would drop the trap; run in the foreground and forward signals instead.
.venv/bin/groundwire serve &
server_pid=$!
trap 'kill -TERM "$server_pid" 2>/dev/null' TERM INT
wait "$server_pid" || true
wait "$server_pid" 2>/dev/null || true
