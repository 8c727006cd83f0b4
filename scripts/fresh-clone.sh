#!/usr/bin/env bash
# Run a make target in a fresh clone of this checkout's HEAD, as CI does, with shared/ beside it.
# Usage: scripts/fresh-clone.sh [target ...]   (default: test)
set -euo pipefail
top=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone --quiet "$top" "$work/main"
if [ -d "$top/../shared" ]; then ln -s "$(cd "$top/../shared" && pwd)" "$work/shared"; fi
cd "$work/main"
time make "${@:-test}"
