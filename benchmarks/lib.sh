# benchmarks/lib.sh - shell helpers shared by the benchmark scripts (sourced, not run).
# The sourcing script sets ME (its name in messages) before calling say/die.

say() { printf '%s: %s\n' "${ME:-bench}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${ME:-bench}" "$*" >&2; exit 1; }

listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q LISTEN; }

# running, not a zombie (bash may not reap while it runs a trap: no `wait` here, it can hang)
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$st" ] && [ "${st#Z}" = "$st" ]; }

# wait up to 30 s for process PID to listen on PORT; fails if it exits or does not
wait_listening() {
    local port=$1 pid=$2
    for _ in $(seq 1 300); do
        listening "$port" && return 0
        alive "$pid" || return 1
        sleep 0.1
    done
    return 1
}

# the taskset prefix for a CPU list (default: BROKER_CPU); nothing when empty or no taskset
pin() {
    local cpus=${1-${BROKER_CPU:-}}
    if [ -n "$cpus" ] && command -v taskset >/dev/null; then echo "taskset -c $cpus"; fi
}

# pids of a process's descendants, listed before anything is killed (orphans get reparented)
descendants() { local c; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done; }

# stop a process and all its descendants, by pid: TERM, up to 5 s, then KILL
stop_tree() {
    local pids p left=""
    pids="$1 $(descendants "$1")"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null
    for _ in $(seq 1 50); do
        left=""; for p in $pids; do alive "$p" && left="$left $p"; done
        [ -n "$left" ] || break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    [ -z "$left" ] || kill -KILL $left 2>/dev/null
}
