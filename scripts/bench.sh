#!/usr/bin/env bash
# Every benchmark of docs/benchmarks.md in one run: the machine, then each bench's table
# (ratios are taken against baselines measured in the same run). Release profile; the first
# run compiles RocksDB in release once (~15 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
echo "### machine"
echo "- cores: $(nproc); memory: $(free -g | awk '/^Mem:/ {print $2}') GiB"
echo "- cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "- flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(sha_ni|aes|avx2|avx512f|pclmulqdq)$' | tr '\n' ' ')"
echo "- disk: $(df -h "${TMPDIR:-/tmp}" | awk 'NR==2 {print $1", "$2" total, "$4" free"}')"
echo "- date: $(date -u +%Y-%m-%dT%H:%MZ); commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# Everything is compiled before the first measurement, so no bench shares its minutes with
# the compiler.
cargo bench --quiet --workspace --no-run 2>/dev/null
cargo bench --quiet --features postgres --bench cell --no-run 2>/dev/null
# On a shared virtual machine the hypervisor takes some of the CPU ("steal" in /proc/stat);
# each bench reports how much, since it moves every absolute figure.
cpu() { awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat; }
stolen() {
  read -r t1 s1 < <(cpu)
  echo
  awk -v t="$((t1 - t0))" -v s="$((s1 - s0))" \
    'BEGIN { printf "CPU stolen by the hypervisor during this bench: %.1f %%\n", (t > 0 ? 100 * s / t : 0) }'
}
for b in append http reads scale provision flow4 terminal; do
  echo
  echo "### $b"
  read -r t0 s0 < <(cpu)
  cargo bench --quiet --bench "$b" 2>/dev/null
  stolen
done
echo
echo "### cell"
# The replicated cell beside the embedded engine (issue 31): a cell of its own on loopback,
# stopped by PID afterwards; the failover it measures kills its leader.
cell="$(mktemp -d)"
trap 'bash scripts/pg-cell.sh stop "$cell" >/dev/null 2>&1 || true; rm -rf "$cell"' EXIT
dsn="$(bash scripts/pg-cell.sh start "$cell")"
read -r t0 s0 < <(cpu)
KUKAKU_BENCH_PG_DSN="$dsn" KUKAKU_BENCH_PG_CELL="$cell" KUKAKU_BENCH_SVG=docs/benchmarks/cell.svg \
  cargo bench --quiet --features postgres --bench cell 2>/dev/null
stolen
bash scripts/pg-cell.sh stop "$cell"
echo
echo "### audit verify"
read -r t0 s0 < <(cpu)
cargo bench --quiet -p kukaku-audit --bench verify 2>/dev/null
stolen
