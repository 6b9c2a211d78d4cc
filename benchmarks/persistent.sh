#!/usr/bin/env bash
# benchmarks/persistent.sh - QoS 1 pairs with persistent sessions: our broker on each
# store (memory, SQLite, Redis) side by side with mosquitto with persistence on.
#
#   benchmarks/persistent.sh [-r REPS] [-d SECS] [-s "SCENARIOS"] [-b "BROKERS"] [-o DIR]
#     -r  repetitions (default 3): every scenario runs for each broker in turn (A B C D A B C D ...)
#     -d  measured seconds per run (default 10)
#     -s  scenarios (default "pairs1 pairs1r"):
#           pairs1   200 pairs, QoS 1, 16 in flight per publisher, 64-byte payloads (throughput)
#           pairs1r  the same at a fixed 5 msg/s per publisher, 1000 msg/s in all (latency)
#     -b  brokers, first = ratio baseline (default "mosquitto mine-memory mine-sqlite mine-redis")
#     -o  output directory (default .bench/persistent-<timestamp>)
#
# Why a script of its own: ../shared/bench's mqttload always connects with Clean Session 1
# (mqttload.c, q_connect), and a clean session is never stored by any broker. This script
# builds .bench/mqttload-persistent from the same source with that one flag turned to 0 (a
# build-time edit, checked to change exactly that line), so every client keeps a persistent
# session: each QoS 1 delivery is a stored message until the subscriber acknowledges it.
#
# Every broker is started afresh, with an empty store, before every run: runs do not see each
# other's sessions (mqttload reuses the topics user/<i>; sessions left by an earlier run would
# queue every later run's messages). Brokers are pinned to CPU 0 (redis-server too, as part of
# the system under test), the generator to CPU 1. Everything listens on 127.0.0.1 only:
#   mosquitto 22005 (the reference configuration with persistence true)
#   mine-memory 22011, mine-sqlite 22012, mine-redis 22013, redis-server 22090
# Our broker runs with the reference in-flight window and queue depth, like peers.sh.
# Results: DIR/results.txt (run_peers.sh format), DIR/table.md (its table, plus the Redis
# server's CPU beside mine-redis), logs in .refs/run/persistent/. A default run takes about
# 10 minutes.
#
# Environment (optional): SHARED_BENCH (default ../shared/bench), PYTHON (.venv/bin/python),
# BROKER_CPU (default 0), GEN_CPU (default 1), PERSISTENT_TIMEOUT (whole run, default 3600 s).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$ROOT" || exit 1
# shellcheck source=benchmarks/lib.sh
. "$ROOT/benchmarks/lib.sh"
ME=persistent

REPS=3 DUR=10 SCENS="pairs1 pairs1r" BROKERS="mosquitto mine-memory mine-sqlite mine-redis" OUT=""
while getopts "r:d:s:b:o:h" o; do
    case $o in
        r) REPS=$OPTARG ;; d) DUR=$OPTARG ;; s) SCENS=$OPTARG ;; b) BROKERS=$OPTARG ;; o) OUT=$OPTARG ;;
        *) sed -n '2,33p' "$0"; exit 1 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument '$1'"
for n in "$REPS" "$DUR"; do case $n in '' | *[!0-9]* | 0) die "-r and -d take whole numbers above 0" ;; esac; done

SHARED_BENCH=${SHARED_BENCH:-../shared/bench}
[ -f "$SHARED_BENCH/mqttload.c" ] || die "$SHARED_BENCH/mqttload.c not found (set SHARED_BENCH)"
PYTHON=${PYTHON:-.venv/bin/python}
BROKER_CPU=${BROKER_CPU-0}
GEN_CPU=${GEN_CPU-1}
PERSISTENT_TIMEOUT=${PERSISTENT_TIMEOUT:-3600}
RUN_DIR=$(realpath -m .refs/run/persistent)
BENCH_DIR="$ROOT/.bench"
GEN="$BENCH_DIR/mqttload-persistent"
REDIS_PORT=22090
OUT=${OUT:-$BENCH_DIR/persistent-$(date +%Y%m%d-%H%M%S)}

port_of() {
    case $1 in
        mosquitto) echo 22005 ;; mine-memory) echo 22011 ;; mine-sqlite) echo 22012 ;; mine-redis) echo 22013 ;;
        *) return 1 ;;
    esac
}
for b in $BROKERS; do port_of "$b" >/dev/null || die "unknown broker '$b' (mosquitto mine-memory mine-sqlite mine-redis)"; done
args_of() {
    case $1 in
        pairs1) echo "pairs -q 1 -N 200 -w 16 -m 64 -d $DUR" ;;
        pairs1r) echo "pairs -q 1 -N 200 -w 16 -r 5 -m 64 -d $DUR" ;;
        *) return 1 ;;
    esac
}
for s in $SCENS; do args_of "$s" >/dev/null || die "unknown scenario '$s' (pairs1 pairs1r)"; done

# ------------------------------------------------------------------ 1. the generator
mkdir -p "$BENCH_DIR" "$RUN_DIR" "$OUT"
SRC="$BENCH_DIR/mqttload-persistent.c"
CLEAN='p[n++] = 0x02; /* clean session */'
[ "$(grep -cF "$CLEAN" "$SHARED_BENCH/mqttload.c")" = 1 ] ||
    die "mqttload.c no longer has exactly one '$CLEAN' line: update this script's edit"
sed "s|p\[n++\] = 0x02; /\* clean session \*/|p[n++] = 0x00; /* persistent session (benchmarks/persistent.sh) */|" \
    "$SHARED_BENCH/mqttload.c" >"$SRC.new"
[ "$(diff "$SHARED_BENCH/mqttload.c" "$SRC.new" | grep -c '^[<>]')" = 2 ] || die "the clean-session edit changed more than one line"
if ! cmp -s "$SRC.new" "$SRC" || [ ! -x "$GEN" ]; then
    mv "$SRC.new" "$SRC"
    ${CC:-gcc} -O2 -Wall -Wextra -o "$GEN" "$SRC" || die "building $GEN failed"
else
    rm -f "$SRC.new"
fi

# ------------------------------------------------------------------ 2. brokers
command -v mosquitto >/dev/null || case " $BROKERS " in *" mosquitto "*) die "mosquitto not installed (apt-get install mosquitto)" ;; esac
case " $BROKERS " in *" mine-redis "*)
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null || die "redis-server/redis-cli not installed" ;;
esac
[ -x "$PYTHON" ] || command -v "$PYTHON" >/dev/null || die "no interpreter $PYTHON"
ulimit -n "$(ulimit -Hn)" 2>/dev/null

MOSQ_CONF="$RUN_DIR/mosquitto.conf"
# the reference configuration, on its own port, with persistence on (autosave every 30 min, the default)
sed -e "s|^listener 22001 |listener $(port_of mosquitto) |" -e "s|^persistence false|persistence true\npersistence_location $RUN_DIR/mosquitto-data/|" \
    "$SHARED_BENCH/configs/mosquitto.conf" >"$MOSQ_CONF"
grep -q "^persistence true" "$MOSQ_CONF" && grep -q "^listener $(port_of mosquitto) " "$MOSQ_CONF" ||
    die "could not derive a persistent mosquitto configuration from $SHARED_BENCH/configs/mosquitto.conf"

BROKER_PID=""
start_broker() {   # NAME: started with an empty store, listening, pid in BROKER_PID
    local name=$1 port log="$RUN_DIR/$1.log" data="$RUN_DIR/$1-data"
    port=$(port_of "$name")
    listening "$port" && { say "port $port already in use"; return 1; }
    rm -rf "$data" "$RUN_DIR/mosquitto-data"
    mkdir -p "$data" "$RUN_DIR/mosquitto-data"
    echo "=== $(date '+%F %T') start $name" >>"$log"
    # shellcheck disable=SC2046  # word splitting of the pin is wanted
    case $name in
        mosquitto) (exec $(pin "$BROKER_CPU") mosquitto -c "$MOSQ_CONF") </dev/null >>"$log" 2>&1 & ;;
        mine-*)
            local store=${name#mine-}
            case $store in
                memory) store=memory ;;
                sqlite) store=sqlite: ;;
                redis) store="redis:url=redis://127.0.0.1:$REDIS_PORT/0" ;;
            esac
            (exec $(pin "$BROKER_CPU") "$PYTHON" -m twisted --log-format text mqtt \
                --listen "tcp:$port:interface=127.0.0.1:backlog=1024" \
                --max-inflight 1000 --max-queued-messages 1000000 \
                --persistence "$store" --data-dir "$data") </dev/null >>"$log" 2>&1 & ;;
    esac
    BROKER_PID=$!
    wait_listening "$port" "$BROKER_PID" && return 0
    say "$name did not start (see $log)"; tail -5 "$log" >&2
    stop_broker
    return 1
}
stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    stop_tree "$BROKER_PID"
    BROKER_PID=""
}

REDIS_PID=""
start_redis() {
    listening "$REDIS_PORT" && die "port $REDIS_PORT already in use"
    rm -rf "$RUN_DIR/redis-data"; mkdir -p "$RUN_DIR/redis-data"
    # durable like the broker promises: every write in the append-only file, fsync'd
    # shellcheck disable=SC2046
    (exec $(pin "$BROKER_CPU") redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly yes --appendfsync always --dir "$RUN_DIR/redis-data") </dev/null >"$RUN_DIR/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "redis-server did not start (see $RUN_DIR/redis.log)"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

WATCHDOG_PID=""
cleanup() {
    trap - EXIT INT TERM HUP
    [ -z "$WATCHDOG_PID" ] || stop_tree "$WATCHDOG_PID"
    stop_broker
    [ -z "$REDIS_PID" ] || stop_tree "$REDIS_PID"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM HUP
(sleep "$PERSISTENT_TIMEOUT" && echo "persistent: PERSISTENT_TIMEOUT=${PERSISTENT_TIMEOUT}s reached" >&2 && kill -TERM $$) &
WATCHDOG_PID=$!

case " $BROKERS " in *" mine-redis "*) start_redis ;; esac

# ------------------------------------------------------------------ 3. runs
RES="$OUT/results.txt"
: >"$RES"
GPIN=$(pin "$GEN_CPU")
HZ=$(getconf CLK_TCK)
say "brokers: $BROKERS  scenarios: $SCENS  reps: $REPS  duration: ${DUR}s  out: $OUT"
for rep in $(seq 1 "$REPS"); do
    for scen in $SCENS; do
        for name in $BROKERS; do
            port=$(port_of "$name")
            [ "$name" != mine-redis ] || redis-cli -p "$REDIS_PORT" flushall >/dev/null || die "FLUSHALL failed"
            if ! start_broker "$name"; then
                echo "name=$name rep=$rep scen=$scen RESULT ok=0 error=no_start" >>"$RES"
                continue
            fi
            r0=0; [ -z "$REDIS_PID" ] || r0=$(cpu_ticks "$REDIS_PID")
            t0=$(date +%s.%N)
            # shellcheck disable=SC2046,SC2086
            line=$(timeout $((DUR + 150)) $GPIN "$GEN" $(args_of "$scen") -p "$port" -b "$BROKER_PID" \
                2>>"$OUT/stderr.log" | grep '^RESULT' | tail -1)
            extra=""
            if [ "$name" = mine-redis ]; then
                extra=" redis_cpu_pct=$(awk -v a="$r0" -v b="$(cpu_ticks "$REDIS_PID")" -v hz="$HZ" -v t0="$t0" -v t1="$(date +%s.%N)" \
                    'BEGIN { printf "%.0f", 100 * (b - a) / hz / (t1 - t0) }')"
            fi
            [ -n "$line" ] || line="RESULT scenario=$scen ok=0 error=no_result"
            echo "name=$name rep=$rep scen=$scen $line$extra" >>"$RES"
            printf '%-12s rep %s %-8s %s\n' "$name" "$rep" "$scen" \
                "$(echo "$line$extra" | grep -owE '(msgs_per_s|p50_us|p99_us|broker_cpu_pct|redis_cpu_pct|lost|dups|ok|error)=[^ ]+' | tr '\n' ' ')"
            stop_broker
            sleep 1
        done
    done
done

# ------------------------------------------------------------------ 4. table
HARNESS="$BENCH_DIR"   # run_peers.sh through a link, so that it never writes into shared/
for f in run_peers.sh Makefile mqttload.c; do ln -sfn "$(cd "$SHARED_BENCH" && pwd)/$f" "$HARNESS/$f"; done
{
    "$HARNESS/run_peers.sh" -S "$OUT"
    python3 - "$RES" <<'PY'
import statistics, sys
rows = [dict(t.split("=", 1) for t in line.replace("RESULT", "").split() if "=" in t)
        for line in open(sys.argv[1])]
rows = [r for r in rows if r.get("name") == "mine-redis" and "redis_cpu_pct" in r]
if rows:
    print("\n| scenario | mine-redis: broker CPU% | redis-server CPU% | msgs per (broker + redis) CPU-s |")
    print("|---|---|---|---|")
    for scen in dict.fromkeys(r["scen"] for r in rows):
        rs = [r for r in rows if r["scen"] == scen and r.get("ok") == "1"]
        if not rs:
            continue
        med = lambda k: statistics.median(float(r[k]) for r in rs)
        both = med("broker_cpu_pct") + med("redis_cpu_pct")
        print(f"| {scen} | {med('broker_cpu_pct'):.0f} | {med('redis_cpu_pct'):.0f} | "
              f"{med('msgs_per_s') * 100 / both:,.0f} |" if both else f"| {scen} | - | - | - |")
PY
} | tee "$OUT/table.md"
say "table: $OUT/table.md  logs: $RUN_DIR"
