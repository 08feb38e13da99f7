#!/usr/bin/env bash
# Runs the public HTTP cache test suite (npm `http-cache-tests`, the suite behind
# cache-tests.fyi) against nginx proxy_cache, Varnish and leafcache, each in front
# of the suite's test server on 127.0.0.1, and prints the counts side by side.
#
#   bench/http-cache-tests.sh [--id TEST_ID] [PROXY...]     PROXY: nginx varnish leafcache
#
# Without PROXY it runs all three. With --id it runs that one test against each
# named proxy and prints the exchange (requests, responses, result) instead.
# Writes results/<proxy>.json (the suite's raw output), results/summary.json and,
# when leafcache ran, leafcache-failures.txt, all under bench/http-cache-tests/.
#
# Needs node + npm (the npm registry), and installs with apt-get when missing:
# nginx, varnish (and uses redis-server when on PATH). Environment:
#   HCT_SCRATCH        scratch folder (npm package, run files), default
#                      ${TMPDIR:-/tmp}/leafcache-http-cache-tests
#   HCT_VERSION        http-cache-tests version to install (default 0.4.5)
#   HCT_RESULTS        results folder (default bench/http-cache-tests/results)
#   HCT_TIMEOUT        seconds one proxy's suite run may take (default 900)
#   LEAFCACHE_BIN      leafcache binary; default: cargo build --release, then
#                      ${CARGO_TARGET_DIR:-target}/release/leafcache
#   HCT_LEAFCACHE_HEURISTIC=1   add heuristic = true to leafcache's route
#   HCT_NO_REDIS=1     no redis-server: leafcache's Redis URL names a closed port
#   HCT_PKG            a checkout of github.com/http-tests/cache-tests (its current
#                      revision, with `npm install --omit=dev` run in it) to use
#                      instead of the npm package; results then go to
#                      bench/http-cache-tests/results-head/ unless HCT_RESULTS is set
#
# A summary covers every <proxy>.json in the results folder, so running one proxy
# keeps the others' last results side by side.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CONF="$HERE/http-cache-tests"
SCRATCH="${HCT_SCRATCH:-${TMPDIR:-/tmp}/leafcache-http-cache-tests}"
VERSION="${HCT_VERSION:-0.4.5}"
if [[ -n "${HCT_PKG:-}" ]]; then
  RESULTS="${HCT_RESULTS:-$CONF/results-head}"
else
  RESULTS="${HCT_RESULTS:-$CONF/results}"
fi
TIMEOUT="${HCT_TIMEOUT:-900}"
PKG="${HCT_PKG:-$SCRATCH/npm/node_modules/http-cache-tests}"

TEST_ID=""
PROXIES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --id) TEST_ID="${2:?--id needs a test id}"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    nginx|varnish|leafcache) PROXIES+=("$1"); shift ;;
    *) echo "unknown argument: $1 (proxies: nginx varnish leafcache)" >&2; exit 2 ;;
  esac
done
[[ ${#PROXIES[@]} -gt 0 ]] || PROXIES=(nginx varnish leafcache)

say() { printf '* %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---- processes we start, stopped on any exit ------------------------------

PIDS=()
RUN=""
cleanup() {
  local pid
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  # A failed run keeps its folder (configs, logs) for a look; an interrupted one not.
  [[ -n "$RUN" && -n "${INTERRUPTED:-}" ]] && rm -rf "$RUN"
  return 0
}
trap cleanup EXIT
trap 'INTERRUPTED=1; exit 130' INT TERM

stop() { # stop PID: stop one process we started, now, and forget it
  local pid="$1" kept=()
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

free_port() {
  node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

wait_port() { # wait_port PORT PID NAME LOG: until 127.0.0.1:PORT accepts, 20 s at most
  local port="$1" pid="$2" name="$3" log="$4"
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2 || true
      die "$name exited during startup (log: $log)"
    fi
    sleep 0.1
  done
  tail -n 20 "$log" >&2 || true
  die "$name did not listen on 127.0.0.1:$port within 20 s (log: $log)"
}

# ---- prerequisites ---------------------------------------------------------

command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed"

need_apt() { # need_apt COMMAND PACKAGE
  command -v "$1" >/dev/null && return 0
  PATH="$PATH:/usr/sbin:/sbin"
  command -v "$1" >/dev/null && return 0
  say "installing $2 (apt-get)"
  command -v apt-get >/dev/null || die "$1 is missing and apt-get is not available"
  timeout 600 apt-get install -y -qq "$2" >/dev/null 2>&1 ||
    { timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq "$2" >/dev/null; } ||
    die "could not install $2"
}
export DEBIAN_FRONTEND=noninteractive
for p in "${PROXIES[@]}"; do
  case "$p" in
    nginx) need_apt nginx nginx ;;
    varnish) need_apt varnishd varnish ;;
  esac
done

if [[ -n "${HCT_PKG:-}" ]]; then
  [[ -f "$PKG/package.json" ]] || die "HCT_PKG=$PKG is not a checkout of the suite"
  VERSION="$(git -C "$PKG" log -1 --format='git %h %cs' 2>/dev/null || echo checkout)"
elif [[ ! -f "$PKG/package.json" ]] ||
   [[ "$(node -p "require('$PKG/package.json').version")" != "$VERSION" ]]; then
  say "installing http-cache-tests@$VERSION into $SCRATCH/npm"
  mkdir -p "$SCRATCH/npm"
  [[ -f "$SCRATCH/npm/package.json" ]] || echo '{"private": true}' > "$SCRATCH/npm/package.json"
  timeout 300 npm install --prefix "$SCRATCH/npm" --no-audit --no-fund --loglevel=error \
    "http-cache-tests@$VERSION" >&2 || die "npm install http-cache-tests@$VERSION failed"
fi

# The npm package has server/ and cli.mjs at its top; the repository keeps
# them under test-engine/.
ENGINE=.
[[ -f "$PKG/cli.mjs" ]] || ENGINE=test-engine

LEAFCACHE="${LEAFCACHE_BIN:-}"
if [[ " ${PROXIES[*]} " == *" leafcache "* && -z "$LEAFCACHE" ]]; then
  say "building leafcache (cargo build --release)"
  (cd "$ROOT" && cargo build --release --quiet) || die "cargo build failed"
  LEAFCACHE="${CARGO_TARGET_DIR:-$ROOT/target}/release/leafcache"
fi

mkdir -p "$SCRATCH"
RUN="$(mktemp -d "${SCRATCH}/run.XXXXXX")"
chmod 755 "$RUN"  # varnishd's unprivileged users read its work folder in here
mkdir -p "$RESULTS"

# ---- the suite's test server ----------------------------------------------

ORIGIN_PORT="$(free_port)"
say "test server on 127.0.0.1:$ORIGIN_PORT"
(cd "$PKG" && exec env npm_package_config_protocol=http npm_config_port="$ORIGIN_PORT" \
  npm_config_pidfile="$RUN/server.pid" \
  node --no-warnings --import "$CONF/bind-loopback.mjs" "$ENGINE/server/server.mjs") \
  > "$RUN/server.log" 2>&1 &
PIDS+=($!)
wait_port "$ORIGIN_PORT" "$!" "test server" "$RUN/server.log"

# ---- one proxy at a time ---------------------------------------------------

fill() { # fill TEMPLATE OUT KEY=VALUE...: replace @KEY@ placeholders
  local tpl="$1" out="$2"; shift 2
  local args=()
  for kv in "$@"; do
    local k="${kv%%=*}" v="${kv#*=}"
    v="${v//\\/\\\\}"; v="${v//|/\\|}"; v="${v//&/\\&}"
    args+=(-e "s|@${k}@|${v}|g")
  done
  sed "${args[@]}" "$tpl" > "$out"
}

start_nginx() { # sets PROXY_PORT, PROXY_PID
  PROXY_PORT="$(free_port)"
  mkdir -p "$RUN/nginx-cache" "$RUN/nginx-tmp"
  local user="" mime=""
  [[ $EUID -eq 0 ]] && user="user root;"
  [[ -f /etc/nginx/mime.types ]] && mime="include /etc/nginx/mime.types;"
  fill "$CONF/nginx.conf" "$RUN/nginx.conf" RUN="$RUN" PORT="$PROXY_PORT" \
    ORIGIN_PORT="$ORIGIN_PORT" USER="$user" MIME_TYPES="$mime"
  nginx -t -q -e "$RUN/nginx-error.log" -c "$RUN/nginx.conf" -p "$RUN" > "$RUN/nginx.log" 2>&1 ||
    { cat "$RUN/nginx.log" >&2; die "nginx rejected $RUN/nginx.conf"; }
  nginx -e "$RUN/nginx-error.log" -c "$RUN/nginx.conf" -p "$RUN" >> "$RUN/nginx.log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "$PROXY_PORT" "$PROXY_PID" nginx "$RUN/nginx-error.log"
  VERSIONS+=("nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //')")
}

start_varnish() {
  PROXY_PORT="$(free_port)"
  fill "$CONF/varnish.vcl" "$RUN/varnish.vcl" ORIGIN_PORT="$ORIGIN_PORT"
  local jail=()
  [[ $EUID -eq 0 ]] && jail=(-j unix)
  varnishd -F "${jail[@]}" -n "$RUN/varnish" -a "127.0.0.1:$PROXY_PORT" -T "127.0.0.1:$(free_port)" \
    -f "$RUN/varnish.vcl" -p default_ttl=0 -p default_grace=0 -p default_keep=3600 \
    -s malloc,64M > "$RUN/varnish.log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "$PROXY_PORT" "$PROXY_PID" varnishd "$RUN/varnish.log"
  VERSIONS+=("varnish: $(varnishd -V 2>&1 | head -n 1)")
}

REDIS_PID=""
start_leafcache() {
  local redis_url="redis://127.0.0.1:1"  # nothing listens: leafcache fails open to its L1 tier
  if [[ "${HCT_NO_REDIS:-}" == 1 ]]; then
    say "HCT_NO_REDIS=1: leafcache runs on its in-process tier only (Redis unreachable)"
  elif command -v redis-server >/dev/null; then
    local rport
    rport="$(free_port)"
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$RUN" --logfile "$RUN/redis.log" &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_port "$rport" "$REDIS_PID" redis-server "$RUN/redis.log"
    redis_url="redis://127.0.0.1:$rport"
  else
    say "redis-server not found: leafcache runs on its in-process tier only"
  fi
  PROXY_PORT="$(free_port)"
  local heuristic=""
  [[ "${HCT_LEAFCACHE_HEURISTIC:-}" == 1 ]] && heuristic="heuristic = true"
  fill "$CONF/leafcache.toml" "$RUN/leafcache.toml" RUN="$RUN" PORT="$PROXY_PORT" \
    ADMIN_PORT="$(free_port)" ORIGIN_PORT="$ORIGIN_PORT" REDIS_URL="$redis_url" HEURISTIC="$heuristic"
  "$LEAFCACHE" check-config "$RUN/leafcache.toml" > "$RUN/leafcache.log" 2>&1 ||
    { cat "$RUN/leafcache.log" >&2; die "leafcache rejected $RUN/leafcache.toml"; }
  (cd "$RUN" && exec "$LEAFCACHE" serve --config "$RUN/leafcache.toml") >> "$RUN/leafcache.log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "$PROXY_PORT" "$PROXY_PID" leafcache "$RUN/leafcache.log"
  local rev  # the checkout's commit; "+changes" when the Rust sources differ from it
  rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || rev+="+changes"
  VERSIONS+=("leafcache: $rev (${LEAFCACHE#"$ROOT"/})")
}

run_client() { # run_client PROXY: the whole suite, or TEST_ID, against 127.0.0.1:PROXY_PORT
  local proxy="$1"
  local base="http://127.0.0.1:$PROXY_PORT"
  # The client runs in the background and is waited for, so that a signal
  # reaches the trap (and stops everything) at once rather than after the run.
  local client rc=0
  if [[ -n "$TEST_ID" ]]; then
    say "$proxy: test $TEST_ID against $base"
    (cd "$PKG" && exec timeout 120 env npm_config_base="$base" npm_config_id="$TEST_ID" \
      node --no-warnings "$ENGINE/cli.mjs") &
    client=$!
    PIDS+=("$client")
    wait "$client" || say "$proxy: client exited $?"
    stop "$client"
    return 0
  fi
  say "$proxy: full suite against $base (at most ${TIMEOUT}s)"
  local start=$SECONDS
  (cd "$PKG" && exec timeout "$TIMEOUT" env npm_config_base="$base" npm_package_config_id="" \
    node --no-warnings "$ENGINE/cli.mjs") > "$RUN/$proxy.json" 2> "$RUN/$proxy-client.log" &
  client=$!
  PIDS+=("$client")
  wait "$client" || rc=$?
  stop "$client"
  if [[ $rc -ne 0 ]] || ! node -e "JSON.parse(require('fs').readFileSync(process.argv[1]))" "$RUN/$proxy.json" 2>/dev/null; then
    tail -n 20 "$RUN/$proxy-client.log" >&2 || true
    die "$proxy: the client did not produce results (exit $rc; see $RUN)"
  fi
  cp "$RUN/$proxy.json" "$RESULTS/$proxy.json"
  say "$proxy: done in $((SECONDS - start))s"
}

VERSIONS=("http-cache-tests: $VERSION" "node: $(node --version)")
DONE=()
for proxy in "${PROXIES[@]}"; do
  "start_$proxy"
  run_client "$proxy"
  stop "$PROXY_PID"
  if [[ -n "$REDIS_PID" ]]; then stop "$REDIS_PID"; REDIS_PID=""; fi
  DONE+=("$proxy")
done

if [[ -n "$TEST_ID" ]]; then rm -rf "$RUN"; exit 0; fi

# versions.txt keeps the lines of proxies not run this time.
{
  printf '%s\n' "${VERSIONS[@]}"
  for proxy in nginx varnish leafcache; do
    [[ " ${DONE[*]} " == *" $proxy "* ]] && continue
    grep "^$proxy: " "$RESULTS/versions.txt" 2>/dev/null || true
  done
} > "$RESULTS/versions.new"
mv "$RESULTS/versions.new" "$RESULTS/versions.txt"
FAILURES="$RESULTS/../leafcache-failures.txt"
[[ -z "${HCT_PKG:-}" ]] || FAILURES="$RESULTS/leafcache-failures.txt"
args=(--pkg "$PKG" --summary "$RESULTS/summary.json")
[[ -f "$RESULTS/leafcache.json" ]] && args+=(--failures "leafcache=$FAILURES")
for proxy in nginx varnish leafcache; do
  [[ -f "$RESULTS/$proxy.json" ]] && args+=("$proxy=$RESULTS/$proxy.json")
done
echo
node "$CONF/summarize.mjs" "${args[@]}"
echo
printf '%s\n' "${VERSIONS[@]}"
echo "raw results: $RESULTS/"
[[ -f "$RESULTS/leafcache.json" ]] && echo "leafcache failures: $FAILURES"
rm -rf "$RUN"
