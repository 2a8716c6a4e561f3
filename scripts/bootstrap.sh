#!/usr/bin/env bash
# Installs what gracectl and its tests need on a fresh Debian machine (run as root) and the Python venv.
# Idempotent: apt runs only for missing packages; the venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep in step with gracectl.adapters.tools.TOOLS (tests/unit/test_tools.py checks that every package there is here).
packages=(docker.io docker-registry skopeo qemu-user-static binfmt-support debootstrap git apache2-utils
          groovy default-jre-headless python3-venv runc iproute2 iptables procps)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "error: run as root to install ${missing[*]}" >&2; exit 3; fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/gracectl ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "bootstrap: creating .venv with gracectl and its test dependencies"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch .venv/.installed
fi
# cosign, a sigstore-enabled skopeo, buildx and BuildKit from their Go modules, once per machine (the machine's
# cache, not the clone): CI verifies the signatures and attestations with the first two
# (tests/integration/test_signing.py) and builds through a buildx builder of remote BuildKit daemons with the others
# (tests/integration/test_buildx_agents.py); buildx becomes docker's CLI plugin (gracectl runs it only for a named
# builder: the node's dockerd stays the default). A machine without Go (a build agent running the main job) goes
# on without them: those tests skip there, and fail in CI.
if command -v go >/dev/null || [ -x /usr/local/go/bin/go ]; then
  bash scripts/go-tools.sh --install-buildx-plugin
else
  echo "bootstrap: no Go on this machine: cosign, skopeo-with-sigstore, buildx, BuildKit not built (their tests skip; CI fails them)"
fi
echo "bootstrap: ready ($(.venv/bin/gracectl --help >/dev/null && echo gracectl ok))"
