#!/usr/bin/env bash
# Installs what the browser test needs, when missing: Chromium, CJK fonts and poppler-utils
# (apt-get), and playwright-core (npm, into $HOME/.cache/kukaku-node, outside the clone).
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
# (grep -c reads everything: with -q, fc-list would die of SIGPIPE and pipefail would lie.)
[ "$(fc-list 2>/dev/null | grep -ci 'Noto Sans CJK' || true)" -gt 0 ] || need+=(fonts-noto-cjk)
command -v pdftotext >/dev/null || need+=(poppler-utils)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing ${need[*]} with apt-get" >&2
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"; } \
    || { echo "error: could not install ${need[*]}; install them and retry" >&2; exit 2; }
fi
command -v node >/dev/null && command -v npm >/dev/null \
  || { echo "error: the browser test needs Node.js and npm" >&2; exit 2; }
dir="$HOME/.cache/kukaku-node"
if [ ! -d "$dir/node_modules/playwright-core" ]; then
  echo "installing playwright-core into $dir" >&2
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund playwright-core@1) \
    || { echo "error: npm could not install playwright-core" >&2; exit 2; }
fi
