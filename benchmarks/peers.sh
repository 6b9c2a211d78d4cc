#!/usr/bin/env bash
# benchmarks/peers.sh - compare mqttbroker with the reference brokers in one command.
#
#   benchmarks/peers.sh [run_peers.sh options]     e.g. -r 1 -d 2 -s "fanin0"
#   benchmarks/peers.sh stop                       stop what an interrupted run left behind
#   benchmarks/peers.sh restart NAME PORT          the -R hook run_peers.sh calls (internal)
#
# Run from anywhere; it works in the repository root. It:
#   1. builds the load generator into .bench/mqttload (make; no-op when up to date),
#   2. installs (idempotent) and starts the reference brokers with start_refs.sh
#      (mosquitto 22001, amqtt 22002, aedes 22003, mosca 22004; pinned to CPU 0),
#   3. starts our broker on 127.0.0.1:22010, pinned like the references:
#        python -m twisted $MQTTBROKER_TWIST_ARGS mqtt --listen tcp:22010:interface=127.0.0.1 $MQTTBROKER_ARGS
#      with its log in .refs/run/mine.log,
#   4. runs run_peers.sh with mosquitto first (the ratio baseline), the other references
#      and mine=22010; before each conn run every broker is restarted (ours by this script),
#   5. stops every broker it started when it ends, however it ends (trap).
# Results: .bench/peers-<timestamp>/ (results.txt, table.md, stderr.log, restart.log)
# unless -o DIR is given. Every target is on 127.0.0.1; every run is bounded in time.
# A full default run (-r 3 -d 10, all scenarios) takes about 30 minutes (25-40): start it
# in the background (nohup ... &) where one command may only run 10 minutes.
#
# Environment (all optional):
#   SHARED_BENCH          harness folder                    (default ../shared/bench)
#   MQTTBROKER_ARGS       extra `mqtt` options for our broker, word-split
#                         (not --port/-p/--listen: the listener is set here)
#   MQTTBROKER_TWIST_ARGS twist options before `mqtt`         (default "--log-format text")
#   PYTHON                interpreter for our broker        (default .venv/bin/python)
#   MINE_PORT             our broker's port, 22000-22099    (default 22010)
#   MINE_LISTEN_OPTS      appended to our endpoint description, e.g. ":backlog=511"
#                         (Twisted's default listen backlog is 50; mosquitto uses 100, node 511)
#   PEERS_REFS            reference brokers, in table order  (default "mosquitto amqtt aedes mosca")
#   BROKER_CPU            CPU list for the brokers (taskset) (default 0; "" = no pinning)
#   RUN_DIR               pid and log files                 (default .refs/run)
#   PEERS_TIMEOUT         hard cap on the whole comparison, seconds (default 14400)
#   SKIP_INSTALL=1        do not call start_refs.sh install
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$ROOT" || exit 1
SELF="$ROOT/benchmarks/peers.sh"

# shellcheck source=benchmarks/lib.sh
. "$ROOT/benchmarks/lib.sh"
ME=peers

SHARED_BENCH=${SHARED_BENCH:-../shared/bench}
[ -d "$SHARED_BENCH" ] || die "harness folder SHARED_BENCH=$SHARED_BENCH not found (from $ROOT)"
B=$(cd "$SHARED_BENCH" && pwd)
for f in run_peers.sh start_refs.sh Makefile mqttload.c; do
    [ -f "$B/$f" ] || die "$B/$f missing: is SHARED_BENCH the bench harness folder?"
done

export RUN_DIR BROKER_CPU MQTTBROKER_ARGS MQTTBROKER_TWIST_ARGS PYTHON MINE_PORT MINE_LISTEN_OPTS SHARED_BENCH
RUN_DIR=$(realpath -m "${RUN_DIR:-.refs/run}")
BROKER_CPU=${BROKER_CPU-0}
MQTTBROKER_ARGS=${MQTTBROKER_ARGS:-}
MQTTBROKER_TWIST_ARGS=${MQTTBROKER_TWIST_ARGS---log-format text}
PYTHON=${PYTHON:-.venv/bin/python}
MINE_PORT=${MINE_PORT:-22010}
MINE_LISTEN_OPTS=${MINE_LISTEN_OPTS:-}
PEERS_REFS=${PEERS_REFS:-mosquitto amqtt aedes mosca}
PEERS_TIMEOUT=${PEERS_TIMEOUT:-14400}
BENCH_DIR="$ROOT/.bench"
MINE_PID="$RUN_DIR/mine.pid"
MINE_LOG="$RUN_DIR/mine.log"

case $MINE_PORT in
    220[0-9][0-9]) ;;
    *) die "MINE_PORT=$MINE_PORT: use a port in 22000-22099" ;;
esac
case $PEERS_TIMEOUT in
    '' | *[!0-9]*) die "PEERS_TIMEOUT=$PEERS_TIMEOUT: give whole seconds" ;;
esac
case $MINE_LISTEN_OPTS in
    "") ;;
    *interface*) die "MINE_LISTEN_OPTS must not set the interface: our broker listens on 127.0.0.1 only" ;;
    :*) ;;
    *) die "MINE_LISTEN_OPTS must start with ':' (e.g. :backlog=511)" ;;
esac
for a in $MQTTBROKER_ARGS; do
    case $a in
        --port | --port=* | -p | -p* | --listen | --listen=*)
            die "MQTTBROKER_ARGS must not set the listener ($a): peers.sh listens on 127.0.0.1:$MINE_PORT" ;;
    esac
done

ulimit -n "$(ulimit -Hn)" 2>/dev/null


# ------------------------------------------------------------------ our broker
start_mine() {   # [append]: keep the log (restarts), else start a new one
    mkdir -p "$RUN_DIR"
    if listening "$MINE_PORT"; then
        say "port $MINE_PORT already in use:"; ss -Hltnp "sport = :$MINE_PORT" >&2; return 1
    fi
    [ -x "$PYTHON" ] || command -v "$PYTHON" >/dev/null ||
        { say "no interpreter $PYTHON (set PYTHON, or create .venv with the project installed)"; return 1; }
    [ "${1:-}" = append ] || : >"$MINE_LOG"
    echo "=== $(date '+%F %T') start: $PYTHON -m twisted $MQTTBROKER_TWIST_ARGS mqtt --listen tcp:$MINE_PORT:interface=127.0.0.1$MINE_LISTEN_OPTS $MQTTBROKER_ARGS" >>"$MINE_LOG"
    # shellcheck disable=SC2046,SC2086  # word splitting of the pin and the arg lists is wanted
    (exec $(pin) "$PYTHON" -m twisted $MQTTBROKER_TWIST_ARGS mqtt \
        --listen "tcp:$MINE_PORT:interface=127.0.0.1$MINE_LISTEN_OPTS" $MQTTBROKER_ARGS) </dev/null >>"$MINE_LOG" 2>&1 &
    local pid=$!
    echo "$pid" >"$MINE_PID"
    if wait_listening "$MINE_PORT" "$pid"; then echo "mine started pid=$pid port=$MINE_PORT"; return 0; fi
    say "our broker failed to start (see $MINE_LOG):"; tail -15 "$MINE_LOG" >&2
    kill "$pid" 2>/dev/null; rm -f "$MINE_PID"
    return 1
}

stop_mine() {
    [ -f "$MINE_PID" ] || return 0
    local pid; pid=$(cat "$MINE_PID")
    if [ -n "$pid" ] && alive "$pid"; then
        kill "$pid"
        for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done   # 10 s
        if alive "$pid"; then say "mine pid=$pid ignored SIGTERM: SIGKILL"; kill -9 "$pid"; fi
        echo "mine stopped pid=$pid"
    fi
    rm -f "$MINE_PID"
}

stop_all() {
    stop_mine
    "$B/start_refs.sh" stop
}

# ------------------------------------------------------------------ subcommands
case ${1:-} in
restart)   # run_peers.sh -R hook: "CMD NAME PORT" before each conn run
    [ $# -ge 2 ] || die "usage: peers.sh restart NAME [PORT]"
    if [ "$2" = mine ]; then
        stop_mine; sleep 0.5; start_mine append; exit $?
    fi
    exec "$B/start_refs.sh" restart "$2" ${3:+"$3"} ;;
stop) stop_all; exit 0 ;;
-h | --help | help)
    sed -n '2,36p' "$SELF"; echo; echo "run_peers.sh options:"; sed -n '4,16p' "$B/run_peers.sh"; exit 0 ;;
esac

# Options are passed to run_peers.sh as they are; read the few that matter here.
OUT_OPT="" SUMMARY_ONLY=""
scan_opts() {
    local OPTIND=1 o
    while getopts ":r:d:s:R:g:b:o:C:x:S:h" o; do
        case $o in
            o) OUT_OPT=$OPTARG ;; S) SUMMARY_ONLY=$OPTARG ;;
            h) sed -n '2,36p' "$SELF"; exit 0 ;;
            :) die "option -$OPTARG needs a value" ;;
            \?) die "unknown option -$OPTARG (see benchmarks/peers.sh --help)" ;;
        esac
    done
    shift $((OPTIND - 1))
    [ $# -eq 0 ] || die "unexpected argument '$1': pass only run_peers.sh options; choose brokers with PEERS_REFS"
}
scan_opts "$@"

# run_peers.sh, started from shared/, builds mqttload inside shared/ whenever `[ -w dir ]`
# is true, which it always is for root whatever the mode bits (run_peers.sh line 113).
# Run it through symlinks in .bench/ so that it builds into .bench/ and never writes to shared/.
HARNESS="$BENCH_DIR"
mkdir -p "$HARNESS"
for f in run_peers.sh Makefile mqttload.c; do ln -sfn "$B/$f" "$HARNESS/$f"; done

if [ -n "$SUMMARY_ONLY" ]; then exec "$HARNESS/run_peers.sh" "$@"; fi

# ------------------------------------------------------------------ 1. load generator
make -s -C "$B" OUT="$BENCH_DIR" "$BENCH_DIR/mqttload" || die "building mqttload failed"
[ -x "$BENCH_DIR/mqttload" ] || die "$BENCH_DIR/mqttload missing after make"

# ------------------------------------------------------------------ 2. reference brokers
mkdir -p "$RUN_DIR"
if [ "${SKIP_INSTALL:-}" != 1 ]; then
    say "installing the reference brokers if needed (log: $RUN_DIR/install.log)"
    "$B/start_refs.sh" install >"$RUN_DIR/install.log" 2>&1 ||
        { tail -20 "$RUN_DIR/install.log" >&2; die "start_refs.sh install failed"; }
fi
for r in $PEERS_REFS; do   # install's exit status can hide a failed step: check what it installs
    case $r in
        mosquitto) command -v mosquitto >/dev/null || die "mosquitto not installed (see $RUN_DIR/install.log)" ;;
        amqtt) [ -x "${AMQTT_VENV:-.refs/venv-amqtt}/bin/amqtt" ] || die "amqtt not installed (see $RUN_DIR/install.log)" ;;
        aedes | mosca) [ -d "${NODE_BROKERS:-.refs/node-brokers}/$r/node_modules/$r" ] || die "$r not installed (see $RUN_DIR/install.log)" ;;
        *) die "unknown reference broker '$r' in PEERS_REFS" ;;
    esac
done
PAIRS=$("$B/start_refs.sh" pairs $PEERS_REFS) || die "start_refs.sh pairs failed"
for p in $PAIRS; do [ "${p#*=}" != "$MINE_PORT" ] || die "MINE_PORT=$MINE_PORT is ${p%%=*}'s port"; done

RUN_PID="" WATCHDOG_PID=""
cleanup() {
    trap - EXIT INT TERM HUP
    if [ -n "$WATCHDOG_PID" ]; then stop_tree "$WATCHDOG_PID"; fi
    if [ -n "$RUN_PID" ] && alive "$RUN_PID"; then
        # run_peers.sh runs each mqttload under its own timeout(1), in a process group
        # of its own: a signal to our group would miss it, so stop the tree by pid
        say "stopping the comparison (run_peers.sh pid $RUN_PID and the load generator)"
        stop_tree "$RUN_PID"
    fi
    say "stopping the brokers"
    stop_all
    local left
    left=$(ss -Hltn 2>/dev/null | awk '{print $4}' | grep -E ":($MINE_PORT|$(echo "$PAIRS" | grep -oE '[0-9]+' | paste -sd'|'))$")
    if [ -n "$left" ]; then say "still listening: $left"; else say "all brokers stopped"; fi
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM HUP

# leftovers of an earlier, killed run (pid files) go first; then the ports must be free
stop_all >/dev/null
busy=""
for p in $PAIRS mine=$MINE_PORT; do listening "${p#*=}" && busy="$busy ${p#*=}"; done
if [ -n "$busy" ]; then
    ss -Hltnp | grep -E ":($(echo $busy | tr ' ' '|'))\b" >&2
    die "port(s)$busy already in use by processes this script did not start; stop them first"
fi
"$B/start_refs.sh" start $PEERS_REFS || die "a reference broker failed to start (logs in $RUN_DIR)"
for p in $PAIRS; do listening "${p#*=}" || die "${p%%=*} is not listening on ${p#*=}"; done

# ------------------------------------------------------------------ 3. our broker
start_mine || die "our broker did not start"

# ------------------------------------------------------------------ 4. comparison
OUT_DIR=${OUT_OPT:-$BENCH_DIR/peers-$(date +%Y%m%d-%H%M%S)}
# shellcheck disable=SC2086
say "run_peers.sh $* $PAIRS mine=$MINE_PORT  (results in $OUT_DIR)"
"$HARNESS/run_peers.sh" -o "$OUT_DIR" -R "$SELF restart" "$@" $PAIRS "mine=$MINE_PORT" &
RUN_PID=$!
# hard cap: every mqttload run is bounded already; this bounds the whole comparison too
(sleep "$PEERS_TIMEOUT" && echo "peers: PEERS_TIMEOUT=${PEERS_TIMEOUT}s reached" >&2 && kill -TERM $$) &
WATCHDOG_PID=$!
wait "$RUN_PID"
rc=$?
RUN_PID=""
stop_tree "$WATCHDOG_PID"; WATCHDOG_PID=""

# run_peers.sh's table crashes (int(nan), line 103) on a conn row without conns=, i.e. a run
# that gave no RESULT (timeout, crash): re-summarise a copy in which such rows hold conns=0.
RES="$OUT_DIR/results.txt"
if [ -f "$RES" ] && grep -E '(^| )scen=conn ' "$RES" | grep -qvE ' conns=[0-9]'; then
    mkdir -p "$OUT_DIR/fixed"
    awk '/(^| )scen=conn / && !/ conns=[0-9]/ { $0 = $0 " conns=0" } { print }' "$RES" >"$OUT_DIR/fixed/results.txt"
    say "some conn runs gave no result: table re-made from $OUT_DIR/fixed/results.txt (conns=0 there)"
    "$HARNESS/run_peers.sh" -S "$OUT_DIR/fixed" | tee "$OUT_DIR/table.md"
fi
[ -f "$OUT_DIR/table.md" ] && say "table: $OUT_DIR/table.md   our broker's log: $MINE_LOG"
exit $rc
