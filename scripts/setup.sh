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
