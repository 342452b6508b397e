#!/usr/bin/env bash
# Installs what the build needs on Debian: clang and libclang-dev (for rocksdb's bindgen) and
# make (for jemalloc).
set -euo pipefail
if ! command -v cargo >/dev/null; then
  echo "error: cargo not found; install Rust (rustup) first" >&2; exit 2
fi
need=()
if ! command -v clang >/dev/null || ! ls /usr/lib/llvm-*/lib/ 2>/dev/null | grep -qE '^libclang(-[0-9.]+)?\.so'; then
  need+=(clang libclang-dev)
fi
# jemalloc (tikv-jemalloc-sys, the binary's allocator) is built with configure and make.
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing ${need[*]} with apt-get" >&2
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"; } \
    || { echo "error: could not install ${need[*]}; install them and retry" >&2; exit 2; }
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kukaku-target}"
# An explicit target keeps build scripts and their dependencies in host units of their own,
# so clippy's check build and the test build share one run of librocksdb-sys's build script
# (one C++ compile of RocksDB instead of two on a cold target directory).
if [ -z "${CARGO_BUILD_TARGET:-}" ]; then
  CARGO_BUILD_TARGET="$(rustc -vV | sed -n 's/^host: //p')"
  export CARGO_BUILD_TARGET
fi
