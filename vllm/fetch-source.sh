#!/bin/bash
# usage: fetch-source.sh [--keep-git] REPO REF DEST
# Shallow fetch of one pinned ref (release tag or full commit) and its submodules (flash-attention and FlashMLA
# carry CUTLASS as one) without history; records the commit it resolved to in DEST/.fetched-commit.
# --keep-git keeps the shallow .git (one commit): setuptools-scm's file finder needs it to list what a wheel
# ships beyond package_data (vLLM's chat templates); otherwise .git is removed.
# DEST/.fetched-source: "REPO REF COMMIT", what the build's provenance names (vllm/Dockerfile collects them).
# GIT_URL_REWRITE ("FROM=TO FROM=TO", e.g. https://github.com/=https://git.internal/) points every git URL,
# submodules included, at a site's mirror.
set -euo pipefail
keep_git=0
if [ "${1:-}" = --keep-git ]; then keep_git=1; shift; fi
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
echo "$repo $ref $(cat "$dest/.fetched-commit")" > "$dest/.fetched-source"
echo "fetched $repo@$ref -> $(cat "$dest/.fetched-commit")"
if [ "$keep_git" = 0 ]; then
  find "$dest" -name .git -prune -exec rm -rf {} +
else
  # .fetched-commit/-source are not part of the source: keep them out of the file finder's and git's view.
  printf '%s\n' .fetched-commit .fetched-source >> "$dest/.git/info/exclude"
fi
