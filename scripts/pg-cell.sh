#!/usr/bin/env bash
# A replicated PostgreSQL cell on loopback for the tests of issue 31 (docs/operations.md,
# "A replicated cell"): three etcd members (the quorum Patroni elects its leader in) and
# three Patroni-managed PostgreSQL 15 nodes, synchronous_mode with synchronous_mode_strict
# and synchronous_commit = on, so a COMMIT returns only once a standby has the WAL.
#
#   scripts/pg-cell.sh start DIR   installs what is missing (apt-get), boots the cell under
#                                  DIR, waits for a leader and a streaming synchronous
#                                  standby, and prints the DSN; PIDs go to DIR/pids
#   scripts/pg-cell.sh stop DIR    stops everything DIR/pids names (TERM, then KILL)
#   scripts/pg-cell.sh status DIR  the members as Patroni sees them
#   scripts/pg-cell.sh kill-leader DIR
#                                  SIGKILLs the leader's Patroni and then its PostgreSQL
#                                  (a machine lost: no one restarts it in place); prints
#                                  the member's number
#   scripts/pg-cell.sh stop-replicas DIR
#                                  stops every member but the leader (no synchronous
#                                  standby left: commits wait)
#   scripts/pg-cell.sh revive DIR  starts again every member whose Patroni is not running
#                                  and waits for a leader and a synchronous standby
#   scripts/pg-cell.sh backup DIR  a full pgBackRest backup of the cell (stanza `kukaku`,
#                                  repository DIR/repo; WAL archived by every member)
#   scripts/pg-cell.sh restore-copy DIR
#                                  restores the latest backup into DIR/restored, starts it
#                                  alone on port +30 and prints its DSN (a DR drill)
#
# Ports: PG_CELL_PORT (default 24000) and up: etcd clients +0,+2,+4 (peers +1,+3,+5),
# Patroni REST +10..+12, PostgreSQL +20..+22. Everything binds to 127.0.0.1. PostgreSQL and
# Patroni run as the `postgres` user (PostgreSQL refuses root); DIR is handed to it.
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop|status|kill-leader|stop-replicas|revive|backup|restore-copy DIR" >&2
  exit 2
fi
base="${PG_CELL_PORT:-24000}"
pg_bin="/usr/lib/postgresql/15/bin"
members=(1 2 3)

etcd_client() { echo $((base + 2 * ($1 - 1))); }
etcd_peer() { echo $((base + 2 * ($1 - 1) + 1)); }
rest_port() { echo $((base + 10 + $1 - 1)); }
pg_port() { echo $((base + 20 + $1 - 1)); }

# Starts a daemon as `postgres` in its own session, logging to DIR/NAME.log; DIR/pids gets
# "NAME PID" with the daemon's own PID (bash execs it: no wrapper process in between).
spawn() {
  local name=$1
  shift
  local pidfile="$dir/$name.pid" drop=()
  rm -f "$pidfile"
  if [ "$(id -u)" -eq 0 ]; then
    drop=(setpriv --reuid=postgres --regid=postgres --init-groups)
  elif [ "$(id -un)" != postgres ]; then
    echo "error: run as root or as postgres (PostgreSQL refuses root; the cell runs as postgres)" >&2
    exit 2
  fi
  setsid "${drop[@]}" env HOME="$dir" bash -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@" \
    >"$dir/$name.log" 2>&1 </dev/null &
  for _ in $(seq 1 100); do
    [ -s "$pidfile" ] && break
    sleep 0.05
  done
  [ -s "$pidfile" ] || { echo "error: $name did not start; see $dir/$name.log" >&2; exit 1; }
  echo "$name $(cat "$pidfile")" >> "$dir/pids"
}

install_missing() {
  local need=()
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v patroni >/dev/null || need+=(patroni)
  [ -x "$pg_bin/postgres" ] || need+=(postgresql-15)
  command -v curl >/dev/null || need+=(curl)
  command -v pgbackrest >/dev/null || need+=(pgbackrest)
  if [ ${#need[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing ${need[*]} with apt-get" >&2
    { $sudo apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"; } \
      || { echo "error: could not install ${need[*]} (the replicated cell needs them); install them and retry" >&2; exit 2; }
  fi
  # Debian's packages start their own services where systemd runs; the cell uses its own.
  id postgres >/dev/null 2>&1 || { echo "error: no postgres user (install postgresql-15)" >&2; exit 2; }
}

write_patroni_config() {
  local i=$1 cfg="$dir/patroni$i.yml"
  local hosts
  hosts="127.0.0.1:$(etcd_client 1),127.0.0.1:$(etcd_client 2),127.0.0.1:$(etcd_client 3)"
  cat > "$cfg" <<EOF
scope: kukaku-cell
namespace: /kukaku/
name: pg$i
log:
  level: WARNING
restapi:
  listen: 127.0.0.1:$(rest_port "$i")
  connect_address: 127.0.0.1:$(rest_port "$i")
etcd3:
  hosts: $hosts
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    synchronous_mode: true
    synchronous_mode_strict: true
    postgresql:
      use_pg_rewind: true
      parameters:
        synchronous_commit: "on"
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        max_connections: 100
        archive_mode: "on"
  initdb:
  - encoding: UTF8
  - data-checksums
postgresql:
  listen: 127.0.0.1:$(pg_port "$i")
  connect_address: 127.0.0.1:$(pg_port "$i")
  data_dir: $dir/pg$i
  bin_dir: $pg_bin
  pgpass: $dir/pgpass$i
  authentication:
    superuser:
      username: postgres
      password: $(cat "$dir/password")
    replication:
      username: replicator
      password: $(cat "$dir/password")
    rewind:
      username: rewinder
      password: $(cat "$dir/password")
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 scram-sha-256
  - host all all 127.0.0.1/32 scram-sha-256
  parameters:
    unix_socket_directories: $dir/run
    # pgBackRest wants the member's own data directory named (it checks the working one).
    archive_command: "pgbackrest --config=$dir/pgbackrest.conf --stanza=kukaku --pg1-path=$dir/pg$i archive-push %p"
EOF
  chmod 600 "$cfg"
}

# pgBackRest: the three members (it backs up whichever is the primary), a repository in
# DIR/repo. Every member archives its WAL there once the stanza exists.
write_pgbackrest_config() {
  local cfg="$dir/pgbackrest.conf" i
  {
    echo "[global]"
    echo "repo1-path=$dir/repo"
    echo "repo1-retention-full=2"
    echo "log-path=$dir/pgbackrest-log"
    echo "lock-path=$dir/pgbackrest-lock"
    echo "spool-path=$dir/pgbackrest-spool"
    echo "start-fast=y"
    echo "log-level-console=warn"
    echo "[kukaku]"
    for i in "${members[@]}"; do
      echo "pg$i-path=$dir/pg$i"
      echo "pg$i-port=$(pg_port "$i")"
      echo "pg$i-socket-path=$dir/run"
    done
  } > "$cfg"
  mkdir -p "$dir/repo" "$dir/pgbackrest-log" "$dir/pgbackrest-lock" "$dir/pgbackrest-spool"
}

# Runs pgBackRest as postgres.
pgbr() {
  local drop=()
  [ "$(id -u)" -eq 0 ] && drop=(setpriv --reuid=postgres --regid=postgres --init-groups)
  "${drop[@]}" env HOME="$dir" pgbackrest --config="$dir/pgbackrest.conf" --stanza=kukaku "$@"
}

start_etcd() {
  local i=$1 cluster=""
  for j in "${members[@]}"; do
    cluster+="${cluster:+,}e$j=http://127.0.0.1:$(etcd_peer "$j")"
  done
  spawn "etcd$i" etcd --name "e$i" --data-dir "$dir/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$(etcd_client "$i")" \
    --advertise-client-urls "http://127.0.0.1:$(etcd_client "$i")" \
    --listen-peer-urls "http://127.0.0.1:$(etcd_peer "$i")" \
    --initial-advertise-peer-urls "http://127.0.0.1:$(etcd_peer "$i")" \
    --initial-cluster "$cluster" --initial-cluster-token kukaku-cell \
    --initial-cluster-state new --log-level warn
}

start_patroni() {
  spawn "patroni$1" patroni "$dir/patroni$1.yml"
}

# The PID DIR/pids holds for NAME (the last one started).
pid_of() {
  awk -v n="$1" '$1 == n { p = $2 } END { if (p) print p }' "$dir/pids"
}

# Drops NAME's line from DIR/pids (it was stopped; its PID may be reused).
forget() {
  local rest
  rest="$(awk -v n="$1" '$1 != n' "$dir/pids")"
  printf '%s\n' "$rest" > "$dir/pids"
}

# The member number of the leader (empty while there is none).
leader() {
  cluster_json | python3 -c '
import json, sys
c = json.load(sys.stdin)
print(next((m["name"][2:] for m in c.get("members", []) if m.get("role") == "leader"), ""))
' 2>/dev/null || true
}

# Waits (up to 180 s) for a leader with a streaming synchronous standby, every member up.
wait_ready() {
  local start_s
  start_s=$(date +%s)
  until ready; do
    if [ $(( $(date +%s) - start_s )) -gt 180 ]; then
      echo "error: no leader with a streaming synchronous standby after 180 s; logs in $dir" >&2
      tail -n 20 "$dir"/patroni*.log >&2 || true
      return 1
    fi
    sleep 1
  done
  echo "cell ready in $(( $(date +%s) - start_s )) s" >&2
}

# The cluster as Patroni's REST API reports it (any member answers).
cluster_json() {
  local i
  for i in "${members[@]}"; do
    curl -fsS --max-time 2 "http://127.0.0.1:$(rest_port "$i")/cluster" 2>/dev/null && return 0
  done
  return 1
}

# A leader and a streaming synchronous standby, and every member up (its Patroni answers:
# a killed member's key stays in etcd, "running", until its ttl ends).
ready() {
  local i
  for i in "${members[@]}"; do
    curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$(rest_port "$i")/liveness" 2>/dev/null || return 1
  done
  cluster_json | python3 -c '
import json, sys
c = json.load(sys.stdin)
roles = [(m.get("role"), m.get("state")) for m in c.get("members", [])]
leader = any(r == "leader" and s == "running" for r, s in roles)
# Patroni names a sync standby only among streaming replicas ("running" before 3.0.4).
sync = any(r == "sync_standby" and s in ("streaming", "running") for r, s in roles)
every = len(roles) == int(sys.argv[1]) and all(s in ("streaming", "running") for _, s in roles)
sys.exit(0 if leader and sync and every else 1)
' "${#members[@]}" 2>/dev/null
}

dsn() {
  local hosts="" ports=""
  for i in "${members[@]}"; do
    hosts+="${hosts:+,}127.0.0.1"
    ports+="${ports:+,}$(pg_port "$i")"
  done
  echo "host=$hosts port=$ports user=postgres password=$(cat "$dir/password") dbname=postgres target_session_attrs=read-write"
}

stop_all() {
  [ -f "$dir/pids" ] || return 0
  local name pid
  # A restored copy and Patroni first (Patroni stops its PostgreSQL), then etcd.
  for pass in restored patroni etcd; do
    while read -r name pid; do
      case "$name" in "$pass"*) kill -TERM "$pid" 2>/dev/null || true ;; esac
    done < "$dir/pids"
    for _ in $(seq 1 100); do
      local alive=0
      while read -r name pid; do
        case "$name" in "$pass"*) kill -0 "$pid" 2>/dev/null && alive=1 ;; esac
      done < "$dir/pids"
      [ "$alive" -eq 0 ] && break
      sleep 0.2
    done
    while read -r name pid; do
      case "$name" in "$pass"*) kill -KILL "$pid" 2>/dev/null || true ;; esac
    done < "$dir/pids"
  done
  # A PostgreSQL whose Patroni was killed: stop it by its own postmaster.pid.
  for i in "${members[@]}"; do
    if [ -f "$dir/pg$i/postmaster.pid" ]; then
      pid="$(head -1 "$dir/pg$i/postmaster.pid")"
      kill -QUIT "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$dir/pids"
}

case "$cmd" in
  start)
    install_missing
    mkdir -p "$dir" "$dir/run"
    dir="$(cd "$dir" && pwd)"
    [ -f "$dir/pids" ] && { echo "error: $dir/pids exists: a cell runs there (stop it first)" >&2; exit 2; }
    [ -f "$dir/password" ] || head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$dir/password"
    for i in "${members[@]}"; do write_patroni_config "$i"; done
    write_pgbackrest_config
    chown -R postgres: "$dir"
    chmod 700 "$dir"
    for i in "${members[@]}"; do start_etcd "$i"; done
    for i in "${members[@]}"; do start_patroni "$i"; done
    wait_ready || { stop_all; exit 1; }
    # WAL is archived from the start (a backup needs the stanza; archive-push fails until it
    # exists).
    pgbr stanza-create >/dev/null 2>&1 || echo "warning: pgBackRest stanza-create failed; see $dir/pgbackrest-log" >&2
    dsn
    ;;
  kill-leader)
    dir="$(cd "$dir" && pwd)"
    n="$(leader)"
    [ -n "$n" ] || { echo "error: the cell has no leader" >&2; exit 1; }
    postmaster="$(head -1 "$dir/pg$n/postmaster.pid")"
    kill -KILL "$(pid_of "patroni$n")"
    kill -KILL "$postmaster"
    forget "patroni$n"
    echo "$n"
    ;;
  stop-replicas)
    dir="$(cd "$dir" && pwd)"
    n="$(leader)"
    [ -n "$n" ] || { echo "error: the cell has no leader" >&2; exit 1; }
    for i in "${members[@]}"; do
      [ "$i" = "$n" ] && continue
      pid="$(pid_of "patroni$i")"
      [ -n "$pid" ] || continue
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
      forget "patroni$i"
    done
    ;;
  backup)
    dir="$(cd "$dir" && pwd)"
    pgbr stanza-create >/dev/null
    pgbr check
    pgbr backup --type=full
    pgbr info >&2
    ;;
  restore-copy)
    dir="$(cd "$dir" && pwd)"
    copy="$dir/restored"
    old="$(pid_of restored)"
    if [ -n "$old" ]; then
      kill -TERM "$old" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
      forget restored
    fi
    rm -rf "$copy"
    install -d -o postgres -g postgres -m 700 "$copy"
    pgbr restore --pg1-path="$copy" --type=immediate --target-action=promote >&2
    port=$((base + 30))
    spawn restored "$pg_bin/postgres" -D "$copy" -p "$port" -c listen_addresses=127.0.0.1 \
      -c unix_socket_directories="$dir/run" -c archive_mode=off -c hba_file="$copy/pg_hba.conf"
    for _ in $(seq 1 120); do
      setpriv --reuid=postgres --regid=postgres --init-groups \
        "$pg_bin/pg_isready" -q -h "$dir/run" -p "$port" && \
      [ "$(setpriv --reuid=postgres --regid=postgres --init-groups "$pg_bin/psql" -h "$dir/run" -p "$port" -U postgres -Atc 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && break
      sleep 0.5
    done
    echo "host=127.0.0.1 port=$port user=postgres password=$(cat "$dir/password") dbname=postgres"
    ;;
  revive)
    dir="$(cd "$dir" && pwd)"
    for i in "${members[@]}"; do
      pid="$(pid_of "patroni$i")"
      if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        # A PostgreSQL left by a killed Patroni goes first; Patroni starts its own.
        if [ -f "$dir/pg$i/postmaster.pid" ]; then
          old="$(head -1 "$dir/pg$i/postmaster.pid")"
          [ "$(ps -o comm= -p "$old" 2>/dev/null)" = postgres ] && kill -KILL "$old"
        fi
        [ -n "$pid" ] && forget "patroni$i"
        start_patroni "$i"
      fi
    done
    wait_ready
    ;;
  stop)
    dir="$(cd "$dir" && pwd)"
    stop_all
    ;;
  status)
    cluster_json | python3 -m json.tool
    ;;
  *)
    echo "usage: $0 start|stop|status|kill-leader|stop-replicas|revive|backup|restore-copy DIR" >&2
    exit 2
    ;;
esac
