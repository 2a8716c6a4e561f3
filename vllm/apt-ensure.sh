#!/bin/bash
# usage: apt-ensure.sh PACKAGE...
# Installs only the packages the image lacks. A site's mirrored base images (or the test bed's) may carry
# them already, and then the build needs no package mirror at all. Apt versions are not pinned: the base
# image's tag/digest pins the distribution, and its point releases drop superseded package versions.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "apt-ensure: installing ${missing[*]}"
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi
