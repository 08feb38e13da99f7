# Shared by the bench scripts: a work directory and the processes started,
# both cleaned up on exit, and the helpers every script needs. Source it after
# `set -euo pipefail` and `cd` to the repository.
# KEEP=1 keeps the work directory; scripts add other directories to remove
# to CLEAN.
WORK=$(mktemp -d)
PIDS=()
CLEAN=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for d in "${CLEAN[@]}"; do rm -rf "$d"; done
  if [ -n "${KEEP:-}" ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Until 127.0.0.1:PORT accepts, 60 s at most.
wait_port() {
  for _ in $(seq 1200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "port $1 never opened" >&2
  exit 1
}
# utime + stime of every thread of the processes given, in clock ticks.
cpu_ticks() { local s=0 p; for p in "$@"; do s=$((s + $(awk '{print $14 + $15}' /proc/"$p"/stat))); done; echo "$s"; }
# Commands redis-server on $REDIS_PORT has run, but for our own probes.
redis_calls() {
  redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' |
    grep -v -e cmdstat_info -e cmdstat_ping -e cmdstat_config |
    sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{s += $1} END {print s + 0}'
}
# A leafcache metric from the admin listener on PORT (0 when absent).
admin_metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="leafcache_$2" '$1 == m {v = $2} END {printf "%.0f", v + 0}'; }
# proxy.toml for a bench proxy in front of $BACKEND_PORT with Redis on
# $REDIS_PORT and the one search route: leafcache_toml PORT ADMIN PREFIX
# SPOOL_DIR LOG(true|false) [CACHE_LINES]. CACHE_LINES go under [cache];
# $EVENTS_LINES (e.g. 'counter_flush = "10s"') under [events].
leafcache_toml() {
  cat <<TOML
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
[upstream]
url = "http://127.0.0.1:$BACKEND_PORT"
[redis]
url = "redis://127.0.0.1:$REDIS_PORT"
key_prefix = "$3"
[cache]
${6:-}
[events]
spool_dir = "$4"
${EVENTS_LINES:-}
[[route]]
name = "search"
methods = ["GET", "POST"]
path = "/api/v1/search"
query = ["json:/query", "query:q"]
log = $5
TOML
}
# A private redis-server on CPU 0 (ephemeral port in REDIS_PORT, its pid in
# REDIS_PID, nothing kept on disk, log in $WORK/redis.log); extra arguments go to redis-server.
start_redis() {
  REDIS_PORT=$(free_port)
  taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    "$@" >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=($!)
  wait_port "$REDIS_PORT"
}
# The fake search backend (bench/servers.rs, built with `cargo build --release
# --example bench_servers`) on CPU 0, its port in BACKEND_PORT.
start_backend() {
  BACKEND_PORT=$(free_port)
  taskset -c 0 target/release/examples/bench_servers backend 127.0.0.1:"$BACKEND_PORT" &
  PIDS+=($!)
  wait_port "$BACKEND_PORT"
}
