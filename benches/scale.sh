#!/usr/bin/env bash
# kiln with a long history beside kiln on an empty database, in one run
# (`scripts/bench scale`):
#
# - the same kiln binary on two fresh databases: one empty, one filled with
#   BENCH_SCALE_RUNS (10,000,000) finished runs by SQL, spread over the
#   last 60 days, each with one of 1,000 tags, one in ten in dev, one in
#   fifty FAILED;
# - on each, in rounds: `runs.retrieve` p99 (wrk, 4 connections),
#   `runs.list` by tag and status p99, `/metrics` p99, and trigger →
#   COMPLETED (wrk, 64 connections posting kiln.noop for 10 s; completed
#   runs per second counted in Postgres until every accepted run is done);
# - then on the filled database with `KILN_RUN_RETENTION=30d` (half the
#   history is past it): trigger p99 in 5-second slices while the retention
#   sweep deletes, beside the slices in which it deletes nothing;
# - the dashboard's pages on each, signed in (wrk, 4 connections): the
#   runs list, the list filtered by tag and status and by a status alone,
#   a run's page, and the queues page.
#
# Needs wrk, psql, Postgres and Redis (scripts/bench installs them).
# Settings: BENCH_SCALE_RUNS, BENCH_ROUNDS (2), BENCH_PG_ADMIN_URL,
# REDIS_URL, KILN_BIN (target/release/kiln).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${BENCH_SCALE_RUNS:-10000000}
rounds=${BENCH_ROUNDS:-2}
admin=${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
redis=${REDIS_URL:-redis://127.0.0.1:6379}
kiln_bin=${KILN_BIN:-target/release/kiln}
work=$(mktemp -d /tmp/kiln-bench-scale.XXXXXX)
pids=()
databases=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for db in "${databases[@]}"; do psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

db_url() { echo "${admin%/*}/$1"; }
sql() { psql "$(db_url "$1")" -qAt -c "$2"; }

# Called in a command substitution (a subshell): the caller records the
# name for clean-up.
fresh_database() {
  local db="kiln_bench_scale_$1_$$"
  psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
  DATABASE_URL=$(db_url "$db") REDIS_URL=$redis KILN_SECRET=bench-server-secret-0123456789abcdef \
    "$kiln_bin" migrate >/dev/null
  echo "$db"
}

# Finished runs and their tags, a million a statement, with the change
# triggers and foreign keys off (as a restore would load them).
fill() {
  local db=$1 lo hi
  for ((lo = 1; lo <= runs; lo += 1000000)); do
    hi=$((lo + 999999 < runs ? lo + 999999 : runs))
    psql "$(db_url "$db")" -q -v ON_ERROR_STOP=1 <<SQL
SET session_replication_role = replica;
SET synchronous_commit = off;
INSERT INTO runs (id, environment, task_identifier, queue, status, payload, payload_type, output, tags,
                  max_attempts, attempt_count, created_at, updated_at, started_at, completed_at)
SELECT 'run_00' || lpad(i::text, 24, '0'),
       CASE WHEN i % 10 = 0 THEN 'dev' ELSE 'prod' END,
       'task-' || (i % 20), 'task/task-' || (i % 20),
       CASE WHEN i % 50 = 0 THEN 'FAILED' ELSE 'COMPLETED' END,
       jsonb_build_object('n', i), 'application/json', jsonb_build_object('ok', true),
       ARRAY['customer-' || (i % 1000)], 3, 1, at, at, at, at + interval '1 second'
FROM (SELECT i, now() - interval '60 days' + (i::float8 / $runs) * interval '59 days' AS at
      FROM generate_series($lo, $hi) AS i) AS history;
INSERT INTO run_tags (tag, run_id)
SELECT 'customer-' || (i % 1000), 'run_00' || lpad(i::text, 24, '0') FROM generate_series($lo, $hi) AS i;
SQL
  done
  sql "$db" "VACUUM ANALYZE runs, run_tags"
}

# Starts `kiln dev` on $1 with the extra environment in $2…; sets $port and
# $key.
start_kiln() {
  local db=$1
  shift
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local env=(DATABASE_URL="$(db_url "$db")" REDIS_URL="$redis" KILN_REDIS_PREFIX="kiln_bench_scale_${db}_$RANDOM"
    KILN_SECRET=bench-server-secret-0123456789abcdef KILN_ADDR="127.0.0.1:$port" KILN_OFFICE_WARM_UP=false
    RUST_LOG=warn KILN_STORAGE_DIR="$work/objects" KILN_DASHBOARD_PASSWORD=bench-dashboard-password "$@")
  key=$(env "${env[@]}" "$kiln_bin" keys create --env prod | tail -1 | tr -d ' ')
  env "${env[@]}" "$kiln_bin" dev >"$work/kiln-$db.log" 2>&1 &
  kiln_pid=$!
  pids+=("$kiln_pid")
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0
    sleep 0.2
  done
  echo "kiln did not start on $db" >&2
  cat "$work/kiln-$db.log" >&2
  exit 1
}

stop_kiln() {
  kill "$kiln_pid"
  wait "$kiln_pid" 2>/dev/null || true
}

cat >"$work/trigger.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"payload":{"n":1}}'
wrk.headers["Content-Type"] = "application/json"
LUA

# wrk's 99th percentile in milliseconds.
p99_ms() {
  awk '$1 == "99%" {
    v = $2; unit = v; gsub(/[0-9.]/, "", unit); sub(/[a-z]+$/, "", v)
    if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000
    printf "%.2f", v }'
}

completed_noops() { sql "$1" "SELECT count(*) FROM runs WHERE task_identifier = 'kiln.noop' AND status = 'COMPLETED'"; }

# One round of every measurement on $1; prints a table row.
measure() {
  local db=$1 label=$2 run_id=$3 auth="Authorization: Bearer $key" base="http://127.0.0.1:$port"
  local retrieve list metrics out sent before started now finished
  retrieve=$(wrk -t1 -c4 -d8s --latency -H "$auth" "$base/api/v3/runs/$run_id" | p99_ms)
  list=$(wrk -t1 -c4 -d8s --latency -H "$auth" \
    "$base/api/v1/runs?filter%5Btag%5D=customer-7&filter%5Bstatus%5D=COMPLETED" | p99_ms)
  metrics=$(wrk -t1 -c1 -d8s --latency "$base/metrics" | p99_ms)
  before=$(completed_noops "$db")
  started=$(date +%s.%N)
  out=$(wrk -t2 -c64 -d10s --latency -s "$work/trigger.lua" -H "$auth" "$base/api/v1/tasks/kiln.noop/trigger")
  sent=$(awk '/requests in/ { print $1 }' <<<"$out")
  while :; do
    finished=$(($(completed_noops "$db") - before))
    [ "$finished" -ge "$sent" ] && break
    sleep 0.2
  done
  now=$(date +%s.%N)
  printf '| %s | %s | %s | %s | %s | %.0f |\n' "$label" "$retrieve" "$list" "$metrics" \
    "$(p99_ms <<<"$out")" "$(echo "$finished / ($now - $started)" | bc -l)"
}

# A page's p99 in milliseconds; a page that timed out (10 s) or answered
# anything but 2xx says so instead.
page_p99() {
  local out
  out=$(wrk -t1 -c4 -d5s --timeout 10s --latency -H "$1" "$2")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
    echo "failed: $(grep "Non-2xx\|Socket errors" <<<"$out" | tr -s ' ' | tr '\n' ' ')"
  else
    p99_ms <<<"$out"
  fi
}

# The dashboard's pages on $1, signed in; appends a table row to
# $dashboard_rows.
dashboard_rows=()
measure_dashboard() {
  local label=$1 run_id=$2 base="http://127.0.0.1:$port/dashboard/prod" cookie runs filtered failed run queues
  cookie=$(curl -s -o /dev/null -D - -d "password=bench-dashboard-password&next=/dashboard/prod/runs" \
    "http://127.0.0.1:$port/dashboard/sign-in" | awk -F'[ ;]' 'tolower($1) == "set-cookie:" { print $2 }')
  local header="Cookie: $cookie"
  runs=$(page_p99 "$header" "$base/runs")
  filtered=$(page_p99 "$header" "$base/runs?tag=customer-7&status=COMPLETED")
  failed=$(page_p99 "$header" "$base/runs?status=FAILED")
  run=$(page_p99 "$header" "$base/runs/$run_id")
  queues=$(page_p99 "$header" "$base/queues")
  dashboard_rows+=("$(printf '| %s | %s | %s | %s | %s | %s |' "$label" "$runs" "$filtered" "$failed" "$run" "$queues")")
}

echo "kiln with $runs finished runs beside an empty database, $rounds rounds"
echo
databases=(kiln_bench_scale_empty_$$ kiln_bench_scale_filled_$$)
empty=$(fresh_database empty)
filled=$(fresh_database filled)
filled_at=$(date +%s)
fill "$filled"
echo "filled $runs runs in $(($(date +%s) - filled_at)) s: $(sql "$filled" "SELECT pg_size_pretty(pg_database_size(current_database()))") on disk"
echo
echo "| database | retrieve p99 ms | list by tag and status p99 ms | /metrics p99 ms | trigger p99 ms | trigger → COMPLETED runs/s |"
echo "|---|---:|---:|---:|---:|---:|"
for ((round = 1; round <= rounds; round++)); do
  # Who goes first alternates.
  order=("$empty" "$filled")
  ((round % 2 == 0)) && order=("$filled" "$empty")
  for db in "${order[@]}"; do
    start_kiln "$db" KILN_RUN_RETENTION=off
    if [ "$db" = "$empty" ]; then
      # A run to read: the empty database's first.
      curl -sf -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d '{"payload":{}}' \
        "http://127.0.0.1:$port/api/v1/tasks/kiln.noop/trigger" >/dev/null
      measure "$db" "empty" "$(sql "$db" "SELECT min(id) FROM runs")"
      measure_dashboard "empty" "$(sql "$db" "SELECT min(id) FROM runs WHERE environment = 'prod'")"
    else
      measure "$db" "$runs runs" "run_00$(printf '%024d' $((runs / 2 + 1)))"
      measure_dashboard "$runs runs" "run_00$(printf '%024d' $((runs / 2 + 1)))"
    fi
    stop_kiln
  done
done

echo
echo "The dashboard, signed in: page p99 ms (wrk, 4 connections, 5 s each)"
echo
echo "| database | runs | runs by tag and status | runs by status FAILED | a run | queues |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${dashboard_rows[@]}"

echo
echo "Retention sweeping the filled database (KILN_RUN_RETENTION=30d): trigger p99 in 5-second slices"
echo
deleted() { sql "$filled" "SELECT n_tup_del FROM pg_stat_user_tables WHERE relname = 'runs'"; }
start_kiln "$filled" KILN_RUN_RETENTION=30d
sweeping=()
quiet=()
for _ in $(seq 18); do
  before=$(deleted)
  p99=$(wrk -t2 -c16 -d5s --latency -s "$work/trigger.lua" -H "Authorization: Bearer $key" \
    "http://127.0.0.1:$port/api/v1/tasks/kiln.noop/trigger" | p99_ms)
  # Deletions are published when the sweep's statements end: a slice is
  # counted as sweeping when the count moved during it.
  sleep 0.5
  gone=$(($(deleted) - before))
  if [ "$gone" -gt 0 ]; then sweeping+=("$p99 ($gone runs deleted)"); else quiet+=("$p99"); fi
done
stop_kiln
echo "slices with the sweep deleting: ${sweeping[*]:-none}"
echo "slices without: ${quiet[*]:-none}"
