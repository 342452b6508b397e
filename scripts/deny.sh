#!/usr/bin/env bash
# `cargo deny check` (advisories, licenses, bans, sources; policy in deny.toml) against an
# offline RustSec advisory database, for scripts/test.sh.
#
# - cargo-deny is installed into $HOME/.cache/kukaku-tools when missing (cargo install
#   --locked; about 15 minutes on 2 cores, once).
# - The snapshot in ../shared/advisory-db (or the nearest shared/advisory-db above the
#   clone; a plain copy, not a git repository; set KUKAKU_ADVISORY_DB for another) becomes a git checkout at
#   .advisory-dbs/advisory-db-3157b0e258782691, the directory cargo-deny derives from the
#   database's URL, committed with the snapshot's date so that its age is reported honestly.
# - cargo-deny then runs with --offline: it fetches nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$HOME/.cache/kukaku-tools"
export PATH="$tools/bin:$PATH"
if ! command -v cargo-deny >/dev/null; then
  echo "installing cargo-deny into $tools (once)" >&2
  cargo install --locked --root "$tools" --target-dir "$tools/target" cargo-deny \
    || { echo "error: could not install cargo-deny; install it (cargo install --locked cargo-deny) and retry" >&2; exit 2; }
fi
# The snapshot: KUKAKU_ADVISORY_DB, else the nearest shared/advisory-db above the clone
# (../shared/advisory-db for a clone beside it).
src="${KUKAKU_ADVISORY_DB:-}"
if [ -z "$src" ]; then
  d="$(cd .. && pwd)"
  while :; do
    if [ -d "$d/shared/advisory-db/crates" ]; then src="$d/shared/advisory-db"; break; fi
    [ "$d" = / ] && break
    d="$(dirname "$d")"
  done
fi
if [ -z "$src" ] || [ ! -d "$src/crates" ]; then
  echo "error: no RustSec advisory database found (looked for shared/advisory-db above $(pwd)); set KUKAKU_ADVISORY_DB to a copy" >&2
  exit 2
fi
command -v git >/dev/null || { echo "error: git is needed to prepare the advisory database" >&2; exit 2; }
dest=".advisory-dbs/advisory-db-3157b0e258782691"
stamp="$( { find "$src" -type f | wc -l; cat "$src/SNAPSHOT.md" 2>/dev/null; } | sha256sum | cut -c1-16)"
# Prepared once per snapshot; the check below runs every time.
if [ ! -f "$dest/.kukaku-stamp" ] || [ "$(cat "$dest/.kukaku-stamp")" != "$stamp" ]; then
  rm -rf "$dest"
  mkdir -p "$dest"
  cp -R "$src"/. "$dest"/
  chmod -R u+w "$dest"
  date_line="$(sed -n 's/.*(\([0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}\)).*/\1/p' "$src/SNAPSHOT.md" 2>/dev/null | head -1)"
  when="${date_line:-2000-01-01}T00:00:00Z"
  (
    cd "$dest"
    git init -q
    git add -A
    GIT_AUTHOR_DATE="$when" GIT_COMMITTER_DATE="$when" \
      git -c user.name=kukaku -c user.email=kukaku@localhost commit -q -m "RustSec advisory-db snapshot"
  )
  echo "$stamp" > "$dest/.kukaku-stamp"
fi

# The crate graph of the one shipped target; cargo fetches what the build would.
meta="$(mktemp)"
trap 'rm -f "$meta"' EXIT
cargo metadata --format-version 1 --locked --filter-platform x86_64-unknown-linux-gnu > "$meta"
cargo deny --offline --metadata-path "$meta" check advisories licenses bans sources
