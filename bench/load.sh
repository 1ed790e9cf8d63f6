#!/usr/bin/env bash
# keyward's HTTP load benchmark, every figure beside a bare axum "hello" measured in the same run.
#
#   bench/load.sh
#
# Installs wrk (apt-get) if missing, builds keyward and the bench tools in release mode, starts
# the bare hello server (bench/tools/src/bin/hello.rs: same axum, hyper and tokio as keyward, same
# runtime settings) and `keyward serve` on a fresh data dir, creates the tokens it needs through
# the command line and the API, then measures in one run:
#   hello GET (before)   the reference
#   hello POST           the same, reading a request body like /v1/verify does
#   hello POST /v1/verify  hello fed the very request stream verify gets (same Lua script)
#   POST /v1/verify      rotating over $TOKENS cached tokens, asking for one scope
#   POST /v1/verify limited  the same over $TOKENS tokens with an address allowlist and a rate
#                        limit (high enough never to refuse during the run)
#   GET  /v1/auth        forward-auth, when the route exists (skipped with a notice otherwise)
#   POST /v1/tokens      token creation (a durable SQLite commit each)
#   hello GET (after)    the reference again, to show the drift over the run
# and prints each with its ratio to the mean of the two hello GET runs.
#
# Knobs (env): DUR=5s RUNS=2 CONN=32 THREADS=2 WARM=1s TOKENS=1000. Binds 127.0.0.1 only.
set -euo pipefail
DUR="${DUR:-5s}"
RUNS="${RUNS:-2}"
CONN="${CONN:-32}"
THREADS="${THREADS:-2}"
WARM="${WARM:-1s}"
TOKENS="${TOKENS:-1000}"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_wrk
build_release
: >"$WORK/results"
log "machine: $(machine_line)"

# ------------------------------------------------------------------ servers
start_server hello "$HELLO" 127.0.0.1:0
HELLO_URL="$URL"
DATA="$WORK/data"
export KEYWARD_LOG=warn
"$KW" --data-dir "$DATA" user add bench >/dev/null
ADMIN="$("$KW" --data-dir "$DATA" token create --user bench --name load-admin \
  --scope 'tokens:*' --scope droplet:read --scope 'volume:*' --expires 30d 2>/dev/null)"
start_server keyward "$KW" --data-dir "$DATA" serve --listen 127.0.0.1:0
KW_URL="$URL"
KW_PID="$LAST_PID"
log "hello at $HELLO_URL, keyward at $KW_URL"

# create_tokens FILE NAME FIELDS : $TOKENS tokens through POST /v1/tokens (one curl, many
# requests), named "NAME i", with the JSON members FIELDS (quotes written \" for curl's config
# file); their secrets to FILE, one a line.
create_tokens() {
  local file="$1" name="$2" fields="$3" i
  log "creating $TOKENS $name tokens through POST /v1/tokens"
  {
    for i in $(seq "$TOKENS"); do
      [ "$i" = 1 ] || echo next
      printf 'url = "%s/v1/tokens"\nheader = "Authorization: Bearer %s"\nheader = "Content-Type: application/json"\ndata = "{\\"name\\": \\"%s %d\\", %s}"\n' \
        "$KW_URL" "$ADMIN" "$name" "$i" "$fields"
    done
  } >"$file.curl"
  curl -s -K "$file.curl" | grep -o '"secret":"[^"]*"' | cut -d'"' -f4 >"$file"
  [ "$(wc -l <"$file")" -eq "$TOKENS" ] || { echo "created $(wc -l <"$file") of $TOKENS $name tokens" >&2; exit 1; }
}
create_tokens "$WORK/secrets" load '\"scopes\": [\"droplet:read\", \"volume:*\"], \"expires\": \"30d\"'
# Tokens with limits: an allowlist the client address below is in, and a rate limit no run
# reaches (so every answer is active: the cost measured is the checks', not refusals').
LIMITED_IP=203.0.113.7
create_tokens "$WORK/limited" limited '\"scopes\": [\"droplet:read\"], \"expires\": \"30d\", \"allowed_ips\": [\"203.0.113.0/24\", \"2001:db8::/32\"], \"rate_limit\": {\"requests\": 100000000, \"per\": \"1m\"}'

# Sanity: the measured requests must give the answer we think they give.
FIRST="$(head -1 "$WORK/secrets")"
answer="$(curl -s "$KW_URL/v1/verify" -H 'content-type: application/json' \
  -d "{\"token\":\"$FIRST\",\"scopes\":[\"droplet:read\"]}")"
case "$answer" in *'"active":true'*) ;; *) echo "verify sanity check failed: $answer" >&2; exit 1 ;; esac
LIMITED="$(head -1 "$WORK/limited")"
answer="$(curl -s "$KW_URL/v1/verify" -H 'content-type: application/json' \
  -d "{\"token\":\"$LIMITED\",\"scopes\":[\"droplet:read\"],\"ip\":\"$LIMITED_IP\"}")"
case "$answer" in *'"active":true'*'"ratelimit"'*) ;; *) echo "limited verify sanity check failed: $answer" >&2; exit 1 ;; esac
answer="$(curl -s "$KW_URL/v1/verify" -H 'content-type: application/json' \
  -d "{\"token\":\"$LIMITED\",\"scopes\":[\"droplet:read\"],\"ip\":\"198.51.100.1\"}")"
case "$answer" in *'"ip_not_allowed"'*) ;; *) echo "limited verify sanity check (outside the allowlist) failed: $answer" >&2; exit 1 ;; esac

# ------------------------------------------------------------------ runs
run_wrk hello_get_before "$HELLO_URL/hello"
BODY='{"token":"'"$FIRST"'","scopes":["droplet:read"]}' \
  run_wrk hello_post "$HELLO_URL/hello" -s "$ROOT/bench/lua/post.lua"
SECRETS="$WORK/secrets" SCOPES='["droplet:read"]' \
  run_wrk hello_verify_stream "$HELLO_URL/v1/verify" -s "$ROOT/bench/lua/verify.lua"
SECRETS="$WORK/secrets" SCOPES='["droplet:read"]' \
  run_wrk verify "$KW_URL/v1/verify" -s "$ROOT/bench/lua/verify.lua"
[ "$(field verify 5)" = 0 ] || { echo "verify: $(field verify 5) non-2xx answers" >&2; exit 1; }
SECRETS="$WORK/limited" SCOPES='["droplet:read"]' IP="$LIMITED_IP" \
  run_wrk verify_limited "$KW_URL/v1/verify" -s "$ROOT/bench/lua/verify.lua"
[ "$(field verify_limited 5)" = 0 ] || { echo "verify_limited: $(field verify_limited 5) non-2xx answers" >&2; exit 1; }

auth_code="$(curl -s -o "$WORK/auth.body" -w '%{http_code}' "$KW_URL/v1/auth" -H "Authorization: Bearer $FIRST")"
if [ "$auth_code" = 200 ] || [ "$auth_code" = 204 ]; then
  run_wrk auth "$KW_URL/v1/auth" -H "Authorization: Bearer $FIRST"
  [ "$(field auth 5)" = 0 ] || { echo "auth: $(field auth 5) non-2xx answers" >&2; exit 1; }
else
  log "notice: GET /v1/auth answered $auth_code ($(head -c 120 "$WORK/auth.body")); forward-auth not measured"
fi

BODY='{"name":"wrk","scopes":["droplet:read"],"expires":"30d"}' BEARER="$ADMIN" \
  run_wrk create "$KW_URL/v1/tokens" -s "$ROOT/bench/lua/post.lua"
run_wrk hello_get_after "$HELLO_URL/hello"
RSS_KIB="$(rss_kib "$KW_PID")"

# ------------------------------------------------------------------ report
HELLO_RPS="$(awk -v a="$(field hello_get_before 2)" -v b="$(field hello_get_after 2)" 'BEGIN { printf "%.0f", (a + b) / 2 }')"
echo
echo "## keyward load benchmark ($(date -Is))"
echo
echo "machine: $(machine_line)"
echo "wrk -t$THREADS -c$CONN -d$DUR --latency, median of $RUNS runs after a $WARM warm-up; $TOKENS tokens; keyward RSS at the end: $((RSS_KIB / 1024)) MiB"
echo
echo "| figure | req/s | p50 µs | p99 µs | non-2xx | ratio to hello GET | target |"
echo "|---|---:|---:|---:|---:|---:|---|"
row() { # name label target
  local rps
  rps="$(field "$1" 2)"
  [ -n "$rps" ] || { echo "| $2 | not measured | | | | | $3 |"; return; }
  awk -v l="$2" -v r="$rps" -v p50="$(field "$1" 3)" -v p99="$(field "$1" 4)" -v n="$(field "$1" 5)" \
    -v h="$HELLO_RPS" -v t="$3" 'BEGIN { printf "| %s | %.0f | %d | %d | %d | %.2fx | %s |\n", l, r, p50, p99, n, r / h, t }'
}
row hello_get_before "bare axum hello GET (before)" ""
row hello_post "bare axum hello POST with a verify-sized body" ""
row hello_verify_stream "bare axum hello POST fed verify's request stream (same Lua script)" ""
row verify "POST /v1/verify (cached, 1 scope)" "≥ 0.85x (issue 15)"
row verify_limited "POST /v1/verify (cached, 1 scope, allowlist + rate limit)" "≥ 0.75x (issue 14)"
row auth "GET /v1/auth (forward-auth)" "≥ 0.9x (issue 15)"
row create "POST /v1/tokens (creation)" ""
row hello_get_after "bare axum hello GET (after)" ""
echo
awk -v v="$(field verify 2)" -v h="$(field hello_verify_stream 2)" \
  'BEGIN { if (h > 0) printf "POST /v1/verify ÷ hello POST fed the same request stream: %.2fx (the client-side cost of rotating secrets taken out)\n", v / h }'
echo
log "done"
