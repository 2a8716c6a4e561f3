#!/bin/bash
# usage: fetch-source.sh REPO REF DEST
# Shallow fetch of one pinned ref (release tag or full commit) and its submodules (flash-attention and FlashMLA
# carry CUTLASS as one) without history; records the commit it resolved to in DEST/.fetched-commit.
# GIT_URL_REWRITE ("FROM=TO FROM=TO", e.g. https://github.com/=https://git.internal/) points every git URL,
# submodules included, at a site's mirror.
set -euo pipefail
repo="$1" ref="$2" dest="$3"
for rule in ${GIT_URL_REWRITE:-}; do
  git config --global "url.${rule#*=}.insteadOf" "${rule%%=*}"
done
git init -q "$dest"
git -C "$dest" remote add origin "$repo"
git -C "$dest" fetch -q --depth 1 origin "$ref"
git -C "$dest" checkout -q FETCH_HEAD
if [ -f "$dest/.gitmodules" ]; then
  git -C "$dest" submodule update -q --init --recursive --depth 1
fi
git -C "$dest" rev-parse HEAD > "$dest/.fetched-commit"
echo "fetched $repo@$ref -> $(cat "$dest/.fetched-commit")"
find "$dest" -name .git -prune -exec rm -rf {} +
