#!/usr/bin/env bash
# leafcache against nginx proxy_cache and a plain hyper server, in one run on
# this machine (issue 7). Every server (a private redis-server, the fake
# search backend, the hyper ceiling, nginx, leafcache) is pinned to CPU 0 and
# wrk to CPU 1; every figure is also given as a ratio to nginx (and, for L1
# hits, to the hyper ceiling) measured minutes apart in the same run, because
# absolute numbers on a shared 2-core machine move by tens of percent.
#
#   bench/compare.sh                   # ~6 minutes
#   DURATION=5 RSS_DURATION=20 bench/compare.sh    # a quick look
#
# Environment:
#   DURATION       seconds per measured target (default 10)
#   RSS_DURATION   seconds of the memory run (default 60)
#   CONNS          connections for throughput runs (default 64)
#   SKIP_WRITER=1  skip `cargo bench --bench event_writer`
#   KEEP=1         keep the work directory (configs, logs, wrk output)
#
# Scenarios: GET hit, POST JSON hit (200 queries x 50 users, every key warmed
# first), Redis-tier hit (L1 disabled), miss path (a new key per request: req/s
# at CONNS connections, p50 added to the backend's at 1 connection), and GET
# hits with search logging on versus off, and POST hits logged (proxy CPU per request from
# /proc/<pid>/stat, Redis commands per logged event from INFO commandstats);
# then a memory run (unique keys, logging on) sampling VmRSS, and the event
# writer's events/s. It ends with the targets of issue 7, each met or not.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
RSS_DURATION=${RSS_DURATION:-60}
CONNS=${CONNS:-64}
WARM_CONNS=16
KEYS=10000 # 200 queries x 50 users
L1_MAX_MIB=64

# --- tools -------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "needs 2 CPUs: servers on CPU 0, wrk on CPU 1" >&2
  exit 1
fi

cargo build --release --quiet
cargo build --release --quiet --example bench_servers
BIN=target/release/leafcache
SERVERS=target/release/examples/bench_servers
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

. bench/lib.sh
SHM=$(mktemp -d -p /dev/shm leafcache-bench.XXXXXX) # nginx's cache on tmpfs
CLEAN+=("$SHM")
HZ=$(getconf CLK_TCK)
status_kib() { awk -v k="$2:" '$1 == k {print $2}' /proc/"$1"/status; }
backend_searches() { curl -s "http://127.0.0.1:$BACKEND_PORT/__stats" | sed -n 's/.*"searches":\([0-9]*\).*/\1/p'; }

# --- servers -----------------------------------------------------------------
# maxmemory bounds the memory run, whose unique keys would otherwise keep
# ~2 GB of entries and search records for their full TTL and retention.
start_redis --maxmemory 2gb --maxmemory-policy allkeys-lru
BACKEND_PORT=$(free_port)
taskset -c 0 "$SERVERS" backend 127.0.0.1:"$BACKEND_PORT" 2>"$WORK/backend.log" &
PIDS+=($!)
BACKEND_PID=$!
CEILING_PORT=$(free_port)
taskset -c 0 "$SERVERS" ceiling 127.0.0.1:"$CEILING_PORT" 2>"$WORK/ceiling.log" &
PIDS+=($!)
CEILING_PID=$!
wait_port "$BACKEND_PORT"
wait_port "$CEILING_PORT"

NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
# open_file_cache keeps cached files open: as many as one hit run's 10,000
# keys need, within the descriptors this machine allows (20,000 here), with
# room for the connections and the files of the miss runs' new entries.
NOFILE=$(ulimit -Hn)
[ "$NOFILE" = unlimited ] && NOFILE=65536
OPEN_FILES=$((NOFILE - 4000 > 20000 ? 20000 : NOFILE - 4000))
if [ "$OPEN_FILES" -ge $((KEYS + 1000)) ]; then
  OPEN_FILE_CACHE="open_file_cache max=$OPEN_FILES inactive=60s;"
else
  OPEN_FILE_CACHE="# open_file_cache off: too few descriptors ($NOFILE) for $KEYS cached files"
fi
cat >"$WORK/nginx/nginx.conf" <<NGINX
# nginx proxy_cache as a search cache: one worker, the cache on tmpfs, POST
# cached by its body (the body must be in memory for \$request_body, hence
# client_body_buffer_size), keepalive to the backend and from the client.
user root;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  proxy_cache_path $SHM levels=1:2 keys_zone=search:64m max_size=2g inactive=1h use_temp_path=off;
  # Cached files are opened through this cache: nginx's best case for hits.
  $OPEN_FILE_CACHE
  upstream backend {
    server 127.0.0.1:$BACKEND_PORT;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    location /api/v1/search {
      client_body_buffer_size 64k;
      client_max_body_size 64k;
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache search;
      proxy_cache_methods GET HEAD POST;
      proxy_cache_key "\$request_method|\$request_uri|\$http_x_user_id|\$request_body";
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
NGINX
"$NGINX" -t -q -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>&1 | grep -v 'user.*directive' >&2 || true
taskset -c 0 "$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>>"$WORK/nginx/error.log" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
wait_port "$NGINX_PORT"
nginx_worker() { pgrep -P "$NGINX_PID" -f 'worker process' | awk 'NR == 1'; }

declare -A PORT PID ADMIN
# leafcache NAME L1_MAX LOG [extra [cache] lines]: one proxy per configuration.
start_leafcache() {
  local name=$1 l1=$2 log=$3 extra=${4:-}
  local port admin
  port=$(free_port)
  admin=$(free_port)
  leafcache_toml "$port" "$admin" "$name:" "$WORK/spool-$name" "$log" \
    "l1_max_bytes = \"$l1\"
l1_ttl = \"10m\" # outlives every run: an L1 run measures L1 hits only
$extra" >"$WORK/$name.toml"
  RUST_LOG=warn taskset -c 0 "$BIN" serve --config "$WORK/$name.toml" 2>"$WORK/$name.log" &
  PIDS+=($!)
  PID[$name]=$!
  PORT[$name]=$port
  ADMIN[$name]=$admin
  wait_port "$port"
}
start_leafcache l1 "${L1_MAX_MIB}MiB" false
start_leafcache redis 0 false
start_leafcache log "${L1_MAX_MIB}MiB" true
PORT[nginx]=$NGINX_PORT
PORT[ceiling]=$CEILING_PORT
PORT[backend]=$BACKEND_PORT

# A leafcache instance's metric, from its admin listener (0 when absent).
# Waits (up to 120 s) until a proxy's event queue and spool are empty.
drain_spool() {
  local i
  for i in $(seq 1200); do
    [ "$(lc_metric "$1" spool_bytes)" = 0 ] && [ "$(lc_metric "$1" events_queue_depth)" = 0 ] && return 0
    sleep 0.1
  done
  echo "the spool of $1 did not drain in 120 s" >&2
}
lc_metric() { admin_metric "${ADMIN[$1]}" "$2"; }

# --- load --------------------------------------------------------------------
# Every key at least once: the walk of 10,000 keys in order, repeated with a
# longer run until one run completed them all (plus the requests in flight).
warm() { # target method
  local secs=2 n
  while :; do
    n=$(taskset -c 1 wrk -t1 -c"$WARM_CONNS" -d"${secs}s" -s bench/wrk/search.lua \
      "http://127.0.0.1:${PORT[$1]}" -- "$2" set warm | tee "$WORK/warm-$1-$2.txt" |
      awk '$1 == "RESULT" {split($2, kv, "="); print kv[2]}')
    [ "$n" -ge $((KEYS + WARM_CONNS)) ] && return 0
    if [ "$secs" -ge 64 ]; then
      echo "warm-up of $1 $2 reached only $n requests in ${secs}s" >&2
      exit 1
    fi
    secs=$((secs * 2))
  done
}

# measure ROW TARGET METHOD KEYS CONNS: one bounded wrk run; writes
# "rps p50_ms p99_ms cpu_us_per_req requests backend_searches errors cpu_percent"
# to $WORK/row.ROW (cpu_percent: the server's CPU time over the run's wall time).
measure() {
  local row=$1 target=$2 method=$3 keys=$4 conns=$5
  local pids
  case $target in
    nginx) pids=$(nginx_worker) ;;
    ceiling) pids=$CEILING_PID ;;
    backend) pids=$BACKEND_PID ;;
    *) pids=${PID[$target]} ;;
  esac
  local t0 b0 t1 b1 out
  t0=$(cpu_ticks $pids)
  b0=$(backend_searches)
  out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${DURATION}s" -s bench/wrk/search.lua \
    "http://127.0.0.1:${PORT[$target]}" -- "$method" "$keys" "$row")
  echo "$out" >"$WORK/wrk-$row.txt"
  sleep 2 # the writer's batches and once-a-second counter flush land in this window
  # Batches the writer spilled to the spool under load are replayed into
  # Redis before the CPU time is read: their cost counts too.
  [ "$target" = log ] && drain_spool log
  t1=$(cpu_ticks $pids)
  b1=$(backend_searches)
  echo "$out" | awk -v t=$((t1 - t0)) -v hz="$HZ" -v b=$((b1 - b0)) '
    $1 == "RESULT" {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
      printf "%.0f %.3f %.3f %.1f %d %d %d %.0f\n", r["requests"] / (r["duration_us"] / 1e6),
        r["p50_us"] / 1000, r["p99_us"] / 1000, t * 1e6 / hz / r["requests"], r["requests"], b,
        r["errors"] + r["non2xx"], t / hz * 100 / (r["duration_us"] / 1e6)
    }' >"$WORK/row.$row"
  echo "  $row: $(cat "$WORK/row.$row")" >&2
}
col() { awk -v n="$2" '{print $n}' "$WORK/row.$1"; }

echo "GET hits" >&2
warm nginx GET
warm l1 GET
measure get.nginx nginx GET set "$CONNS"
measure get.l1 l1 GET set "$CONNS"
measure get.ceiling ceiling GET set "$CONNS"

echo "POST hits" >&2
warm nginx POST
warm l1 POST
measure post.nginx nginx POST set "$CONNS"
measure post.l1 l1 POST set "$CONNS"
measure post.ceiling ceiling POST set "$CONNS"

echo "Redis-tier hits (L1 off)" >&2
warm redis GET
measure get.redis redis GET set "$CONNS"

echo "GET hits, search logging off then on" >&2
warm log GET
sleep 2 # the warm-up's events reach Redis before counting starts
C0=$(redis_calls)
R0=$(cpu_ticks "$REDIS_PID")
measure log.off l1 GET set "$CONNS"
C1=$(redis_calls)
R1=$(cpu_ticks "$REDIS_PID")
W1=$(lc_metric log events_written_total)
D1=$(lc_metric log events_dropped_total)
S1=$(lc_metric log events_spooled_total)
measure log.on log GET set "$CONNS"
C2=$(redis_calls)
R2=$(cpu_ticks "$REDIS_PID")
W2=$(lc_metric log events_written_total)
D2=$(lc_metric log events_dropped_total)
S2=$(lc_metric log events_spooled_total)
echo "POST hits, search logging on" >&2
warm log POST
measure log.post log POST set "$CONNS"
# Commands counted in the logging-on window (the off window shows the floor:
# health probes and the like, normally 0), per event actually written: when
# the writer falls behind, the queue fills and events are dropped, and those
# cost neither Redis commands nor writer CPU.
EVENTS_WRITTEN=$((W2 - W1))
EVENTS_DROPPED=$((D2 - D1))
EVENTS_SPOOLED=$((S2 - S1))
CMDS_PER_EVENT=$(awk -v c=$((C2 - C1)) -v w="$EVENTS_WRITTEN" -v r="$(col log.on 5)" 'BEGIN {printf "%.2f", c / (w > 0 ? w : r)}')
CMDS_OFF=$((C1 - C0))
# redis-server's utime+stime over each window (writes, counter flushes and
# the spool's replay included), per request of the window: on L1 hits Redis
# does nothing else, so the logging-on figure is the log's cost in Redis.
REDIS_US_ON=$(awk -v t=$((R2 - R1)) -v hz="$HZ" -v n="$(col log.on 5)" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
REDIS_US_OFF=$(awk -v t=$((R1 - R0)) -v hz="$HZ" -v n="$(col log.off 5)" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')

echo "miss path: a new key per request" >&2
for conns in "$CONNS" 1; do
  measure "miss$conns.backend" backend GET unique "$conns"
  measure "miss$conns.nginx" nginx GET unique "$conns"
  measure "miss$conns.l1" l1 GET unique "$conns"
done

echo "memory: ${RSS_DURATION}s of unique keys with logging on" >&2
start_leafcache rss "${L1_MAX_MIB}MiB" true
RSS_PID=${PID[rss]}
taskset -c 1 wrk -t1 -c"$CONNS" -d"${RSS_DURATION}s" -s bench/wrk/search.lua \
  "http://127.0.0.1:${PORT[rss]}" -- GET unique rss >"$WORK/wrk-rss.txt" &
WRK_PID=$!
RSS_SAMPLES=()
step=$(((RSS_DURATION + 11) / 12))
metric() { admin_metric "${ADMIN[rss]}" "$1"; }
while kill -0 "$WRK_PID" 2>/dev/null; do
  sleep "$step"
  RSS_SAMPLES+=($(($(status_kib "$RSS_PID" VmRSS) / 1024)))
  # What holds the memory: L1, the event queue, the spool (Redis too slow).
  echo "$(date +%s) rss_mib=${RSS_SAMPLES[-1]} l1_mib=$(($(metric l1_bytes) / 1048576)) l1_entries=$(metric l1_entries)" \
    "queue=$(metric events_queue_depth) spool_mib=$(($(metric spool_bytes) / 1048576))" >>"$WORK/rss-metrics.txt"
done
wait "$WRK_PID" || true
RSS_HWM=$(($(status_kib "$RSS_PID" VmHWM) / 1024))
RSS_REQS=$(awk '$1 == "RESULT" {split($2, kv, "="); print kv[2]}' "$WORK/wrk-rss.txt")
n=${#RSS_SAMPLES[@]}
RSS_QUARTER=${RSS_SAMPLES[$((n / 4))]}
RSS_LAST=${RSS_SAMPLES[$((n - 1))]}
RSS_GROWTH=$(awk -v a="$RSS_QUARTER" -v b="$RSS_LAST" 'BEGIN {printf "%.1f", (b - a) * 100 / a}')

WRITER_RATE=
WRITER_CMDS=
if [ -z "${SKIP_WRITER:-}" ]; then
  echo "event writer (cargo bench --bench event_writer)" >&2
  wout=$(SKIP_BASELINE=1 cargo bench --quiet --bench event_writer 2>"$WORK/writer.log" | tee "$WORK/writer.txt")
  WRITER_RATE=$(echo "$wout" | sed -n 's/^leafcache writer: \([0-9]*\) events\/s, \([0-9.]*\) commands.*/\1/p')
  WRITER_CMDS=$(echo "$wout" | sed -n 's/^leafcache writer: \([0-9]*\) events\/s, \([0-9.]*\) commands.*/\2/p')
fi

# --- report ------------------------------------------------------------------
HWM=()
for name in l1 redis log; do HWM+=("$name $(($(status_kib "${PID[$name]}" VmHWM) / 1024))"); done
NGINX_HWM=$(($(status_kib "$(nginx_worker)" VmHWM) / 1024))

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else print "-"}'; }
row() { # label row-file [vs-nginx-row] [vs-ceiling-row]
  local label=$1 r=$2 vn=${3:-} vc=${4:-} rn="" rc="" cn=""
  if [ -n "$vn" ]; then
    rn=$(ratio "$(col "$r" 1)" "$(col "$vn" 1)")
    cn=$(ratio "$(col "$vn" 4)" "$(col "$r" 4)")
  fi
  [ -n "$vc" ] && rc=$(ratio "$(col "$r" 1)" "$(col "$vc" 1)")
  printf '| %-32s | %7s | %6s | %7s | %8s | %7s | %6s | %7s | %4s | %7s | %3s |\n' "$label" \
    "$(col "$r" 1)" "$(col "$r" 2)" "$(col "$r" 3)" "$rn" "$rc" "$(col "$r" 4)" "$cn" "$(col "$r" 8)" "$(col "$r" 6)" "$(col "$r" 7)"
}

echo
echo "leafcache vs nginx proxy_cache, $(date -u +%F), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
echo "servers on CPU 0, wrk -t1 on CPU 1, ${DURATION}s per row, $CONNS connections unless noted"
echo
printf '| %-32s | %7s | %6s | %7s | %8s | %7s | %6s | %7s | %4s | %7s | %3s |\n' \
  scenario "req/s" "p50 ms" "p99 ms" "vs nginx" "vs ceil" "CPU us" "CPU eff" "CPU%" backend err
echo '|----------------------------------|--------:|-------:|--------:|---------:|--------:|-------:|--------:|-----:|--------:|----:|'
row "GET hit: nginx" get.nginx get.nginx
row "GET hit: leafcache (L1)" get.l1 get.nginx get.ceiling
row "GET hit: hyper ceiling" get.ceiling get.nginx get.ceiling
row "POST hit: nginx" post.nginx post.nginx
row "POST hit: leafcache (L1)" post.l1 post.nginx post.ceiling
row "POST hit: hyper ceiling" post.ceiling post.nginx post.ceiling
row "GET hit: leafcache Redis tier" get.redis get.nginx
row "GET hit: leafcache, logging off" log.off get.nginx
row "GET hit: leafcache, logging on" log.on get.nginx
row "POST hit: leafcache, logging on" log.post post.nginx
row "miss: backend direct" "miss$CONNS.backend" "miss$CONNS.nginx"
row "miss: nginx" "miss$CONNS.nginx" "miss$CONNS.nginx"
row "miss: leafcache" "miss$CONNS.l1" "miss$CONNS.nginx"
row "miss, 1 conn: backend direct" miss1.backend miss1.nginx
row "miss, 1 conn: nginx" miss1.nginx miss1.nginx
row "miss, 1 conn: leafcache" miss1.l1 miss1.nginx
echo
echo "backend = searches the backend answered during the row (0 for a hit run: every key was warm);"
echo "err = socket errors + non-2xx answers; CPU us = the server's utime+stime per request (/proc; the"
echo "proxy alone, not the backend or redis-server); CPU eff = nginx's CPU us / the row's: requests per"
echo "CPU-second as a multiple of nginx's, the throughput ratio on a dedicated core, steadier than req/s"
echo "when other tenants share CPU 0; CPU% = the server's CPU time / wall time (well under 100% with"
echo "nothing else of ours on CPU 0: the core was shared, or the load generator was the limit)."
echo

ADDED_L1=$(awk -v a="$(col miss1.l1 2)" -v b="$(col miss1.backend 2)" 'BEGIN {printf "%.3f", a - b}')
ADDED_NGINX=$(awk -v a="$(col miss1.nginx 2)" -v b="$(col miss1.backend 2)" 'BEGIN {printf "%.3f", a - b}')
LOG_CPU=$(awk -v a="$(col log.on 4)" -v b="$(col log.off 4)" 'BEGIN {printf "%.2f", a / b}')
echo "added p50 at 1 connection (miss, over the backend direct): leafcache ${ADDED_L1} ms, nginx ${ADDED_NGINX} ms"
echo "CPU per request, logging on / off: $(col log.on 4) / $(col log.off 4) us = ${LOG_CPU}x; req/s on / off: $(ratio "$(col log.on 1)" "$(col log.off 1)")"
echo "Redis commands per logged event: $CMDS_PER_EVENT (INFO commandstats; $CMDS_OFF in the logging-off window)"
echo "Redis CPU per logged GET hit: $REDIS_US_ON us (redis-server utime+stime over the window / its requests; $REDIS_US_OFF us with logging off)"
echo "events in the logging-on window: $EVENTS_WRITTEN written (of them $EVENTS_SPOOLED through the spool: the writer fell behind), $EVENTS_DROPPED dropped (queue and spool full) of $(col log.on 5) requests"
[ -n "$WRITER_RATE" ] && echo "event writer into a local redis-server: $WRITER_RATE events/s, $WRITER_CMDS commands/event"
echo "peak RSS (VmHWM): $(printf '%s MiB, ' "${HWM[@]}")nginx worker $NGINX_HWM MiB"
echo "memory run: $RSS_REQS requests in ${RSS_DURATION}s (unique keys, logging on, l1_max_bytes ${L1_MAX_MIB} MiB):" \
  "VmRSS MiB every ${step}s: ${RSS_SAMPLES[*]}; VmHWM $RSS_HWM MiB; growth after the first quarter ${RSS_GROWTH}%"
echo "  at the end: $(tail -1 "$WORK/rss-metrics.txt" | cut -d' ' -f2-)"
echo

# --- targets -----------------------------------------------------------------
MET=0
TOTAL=0
target() { # description measured ok(0|1)
  TOTAL=$((TOTAL + 1))
  local verdict="not met"
  if [ "$3" = 1 ]; then verdict="met"; MET=$((MET + 1)); fi
  printf '| %-58s | %-22s | %-7s |\n' "$1" "$2" "$verdict"
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN {print (a + 0 >= b + 0) ? 1 : 0}'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN {print (a + 0 < b + 0) ? 1 : 0}'; }
rv() { awk -v a="$(col "$1" 1)" -v b="$(col "$2" 1)" 'BEGIN {printf "%.2f", a / b}'; }
printf '| %-58s | %-22s | %-7s |\n' target measured verdict
echo '|------------------------------------------------------------|------------------------|---------|'
for m in get post; do
  M=${m^^}
  r=$(rv "$m.l1" "$m.nginx")
  target "L1 $M hit req/s >= 2.3x nginx" "${r}x" "$(ge "$r" 2.3)"
  r=$(rv "$m.l1" "$m.ceiling")
  target "L1 $M hit req/s >= 0.75x hyper ceiling" "${r}x" "$(ge "$r" 0.75)"
  target "L1 $M hit p99 < 1.5 ms at $CONNS connections" "$(col "$m.l1" 3) ms" "$(lt "$(col "$m.l1" 3)" 1.5)"
done
# The same throughput targets by CPU per request (requests per CPU-second):
# what the proxy would do with CPU 0 to itself.
cv() { awk -v a="$(col "$1" 4)" -v b="$(col "$2" 4)" 'BEGIN {printf "%.2f", b / a}'; }
for m in get post; do
  M=${m^^}
  r=$(cv "$m.l1" "$m.nginx")
  target "L1 $M hit req per CPU-second >= 2.3x nginx (CPU)" "${r}x" "$(ge "$r" 2.3)"
  r=$(cv "$m.l1" "$m.ceiling")
  target "L1 $M hit req per CPU-second >= 0.75x ceiling (CPU)" "${r}x" "$(ge "$r" 0.75)"
done
r=$(rv get.redis get.nginx)
target "Redis-tier hit req/s >= nginx hit (redis-server on CPU 0)" "${r}x" "$(ge "$r" 1)"
r=$(rv "miss$CONNS.l1" "miss$CONNS.nginx")
target "miss req/s >= 1.5x nginx miss" "${r}x" "$(ge "$r" 1.5)"
target "miss added p50 at 1 connection < 0.1 ms" "$ADDED_L1 ms" "$(lt "$ADDED_L1" 0.1)"
if [ "$EVENTS_DROPPED" -gt 0 ]; then
  # Dropped events skip the writer: the ratio flatters logging.
  target "CPU/request logging on <= 1.15x off (events dropped)" "${LOG_CPU}x" 0
else
  target "CPU/request logging on <= 1.15x off" "${LOG_CPU}x" "$(awk -v a="$LOG_CPU" 'BEGIN {print (a <= 1.15) ? 1 : 0}')"
fi
# Issue 18: logged hits at least as fast as nginx's (unlogged) hits, with
# redis-server on the same core as the proxy.
r=$(rv log.on get.nginx)
target "logged GET hit req/s >= 1.0x nginx GET hit" "${r}x" "$(ge "$r" 1)"
r=$(rv log.post post.nginx)
target "logged POST hit req/s >= 1.0x nginx POST hit" "${r}x" "$(ge "$r" 1)"
target "Redis CPU per logged GET hit <= 6 us" "$REDIS_US_ON us" "$(awk -v a="$REDIS_US_ON" 'BEGIN {print (a <= 6) ? 1 : 0}')"
target "Redis commands per logged event <= 8" "$CMDS_PER_EVENT" "$(awk -v a="$CMDS_PER_EVENT" 'BEGIN {print (a <= 8) ? 1 : 0}')"
if [ -n "$WRITER_RATE" ]; then
  target "event writer >= 100,000 events/s" "$WRITER_RATE/s" "$(ge "$WRITER_RATE" 100000)"
fi
target "RSS flat over ${RSS_DURATION}s (< 10% growth after 1/4)" "${RSS_GROWTH}%" "$(lt "$RSS_GROWTH" 10)"
target "peak RSS <= l1_max_bytes + 64 MiB ($((L1_MAX_MIB + 64)) MiB)" "$RSS_HWM MiB" \
  "$(awk -v a="$RSS_HWM" -v b=$((L1_MAX_MIB + 64)) 'BEGIN {print (a <= b) ? 1 : 0}')"
echo
echo "$MET of $TOTAL targets met"

# A hit run that reached the backend, or any errors, make the figures suspect.
bad=0
for r in get.nginx get.l1 post.nginx post.l1 get.redis log.off log.on; do
  if [ "$(col "$r" 6)" != 0 ]; then echo "warning: $r reached the backend $(col "$r" 6) times" >&2; bad=1; fi
done
for f in "$WORK"/row.*; do
  if [ "$(awk '{print $7}' "$f")" != 0 ]; then echo "warning: ${f##*/row.} had $(awk '{print $7}' "$f") errors" >&2; bad=1; fi
done
for name in l1 redis log rss; do
  if grep -q -e '"WARN"' -e '"ERROR"' -e ' WARN ' -e ' ERROR ' "$WORK/$name.log"; then
    echo "note: leafcache $name logged $(grep -c -e WARN -e ERROR "$WORK/$name.log") warnings or errors, first:" >&2
    grep -m1 -e WARN -e ERROR "$WORK/$name.log" >&2 || true
  fi
done
exit $bad
