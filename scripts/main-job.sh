#!/usr/bin/env bash
# The main job on any Debian machine (no GPU, no internet needed beyond Debian's and PyPI's mirrors):
# bring up the local test bed and rehearse the whole pipeline on linux/arm64 under qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cache-dirs.sh  # the same test bed as scripts/test.sh and .ci/run, from any clone
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
gracectl testbed up
gracectl rehearse "$@"
