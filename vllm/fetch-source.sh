#!/bin/bash
# usage: fetch-source.sh REPO REF DEST
# Shallow fetch of one pinned ref (release tag or full commit) without the repository's history;
# records the commit actually fetched in DEST/.fetched-commit.
set -euo pipefail
repo="$1" ref="$2" dest="$3"
git init -q "$dest"
git -C "$dest" remote add origin "$repo"
git -C "$dest" fetch -q --depth 1 origin "$ref"
git -C "$dest" checkout -q FETCH_HEAD
git -C "$dest" rev-parse HEAD > "$dest/.fetched-commit"
echo "fetched $repo@$ref -> $(cat "$dest/.fetched-commit")"
rm -rf "$dest/.git"
