#!/usr/bin/env bash
# Installs what the build needs on Debian: clang and libclang-dev (for rocksdb's bindgen).
set -euo pipefail
if ! command -v cargo >/dev/null; then
  echo "error: cargo not found; install Rust (rustup) first" >&2; exit 2
fi
if ! command -v clang >/dev/null || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing clang and libclang-dev with apt-get" >&2
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang libclang-dev \
    || { echo "error: could not install clang/libclang-dev; install them and retry" >&2; exit 2; }
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kukaku-target}"
# An explicit target keeps build scripts and their dependencies in host units of their own,
# so clippy's check build and the test build share one run of librocksdb-sys's build script
# (one C++ compile of RocksDB instead of two on a cold target directory).
if [ -z "${CARGO_BUILD_TARGET:-}" ]; then
  CARGO_BUILD_TARGET="$(rustc -vV | sed -n 's/^host: //p')"
  export CARGO_BUILD_TARGET
fi
