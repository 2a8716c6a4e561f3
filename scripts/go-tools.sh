#!/usr/bin/env bash
# cosign and a sigstore-enabled skopeo, built from their Go modules at pinned versions, ONCE per machine, into the
# machine's cache (scripts/cache-dirs.sh: /var/cache/gracectl/go-tools/<tool>-<version>/<tool> as root), never
# into the clone. Only the Go module proxy is used (no GitHub): `go mod download` fetches the module, and it is
# built inside its own module directory, so its go.mod (and any replace directive) holds.
#   bash scripts/go-tools.sh          build what is missing, print each tool's path and the build time
#   bash scripts/go-tools.sh --paths  print TOOL=PATH lines only (what scripts/test.sh exports)
# Why these tools: CI checks gracectl's signatures and attestations with the ecosystem's own verifiers (cosign
# verify / verify-attestation, containers' policy.json through skopeo); Debian's skopeo has sigstore disabled and
# cosign is not in Debian. CLAWMINE.md, "Signed images".
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cache-dirs.sh

# Pinned: the module, its version, the main package and the build tags. skopeo v1.19.0: the newest release the
# module proxy serves here; its tags keep it pure Go (no gpgme, btrfs or devicemapper headers: CGO_ENABLED=0).
COSIGN_VERSION=v3.1.3
SKOPEO_VERSION=v1.19.0
declare -A MODULE=([cosign]=github.com/sigstore/cosign/v3 [skopeo]=github.com/containers/skopeo)
declare -A VERSION=([cosign]=$COSIGN_VERSION [skopeo]=$SKOPEO_VERSION)
declare -A PACKAGE=([cosign]=./cmd/cosign [skopeo]=./cmd/skopeo)
declare -A TAGS=([cosign]="" [skopeo]="containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper containers_image_ostree_stub")

tools_dir="$GRACECTL_GO_TOOLS"
tool_path() { echo "$tools_dir/$1-${VERSION[$1]}/$1"; }

if [ "${1:-}" = --paths ]; then
  for tool in cosign skopeo; do echo "$tool=$(tool_path "$tool")"; done
  exit 0
fi

# Go's own caches beside the tools (outside the clone); GOTOOLCHAIN=local: the machine's Go builds it, no
# toolchain download; the module proxy only (the machine's GOPROXY less any "direct" fallback: never a VCS host).
command -v go >/dev/null || PATH="/usr/local/go/bin:$PATH"
export GOMODCACHE="$GRACECTL_GO_CACHE/mod" GOCACHE="$GRACECTL_GO_CACHE/build"
# -modcacherw: the module cache stays deletable with a plain rm -rf.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -modcacherw"
if command -v go >/dev/null; then
  GOPROXY=$(go env GOPROXY | sed -E 's/[,|]direct$//; s/^direct$/off/'); export GOPROXY
fi
for tool in cosign skopeo; do
  out=$(tool_path "$tool")
  if [ -x "$out" ] && "$out" --help >/dev/null 2>&1; then
    echo "go-tools: $tool ${VERSION[$tool]} cached ($out)"
    continue
  fi
  command -v go >/dev/null || { echo "error: go is not installed: $tool ${VERSION[$tool]} is built from its Go module" >&2; exit 3; }
  start=$SECONDS
  dir=$(go mod download -json "${MODULE[$tool]}@${VERSION[$tool]}" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit("error: " + d.get("Error", "no Dir")))')
  mkdir -p "$(dirname "$out")"
  tmp="$out.tmp.$$"
  # -trimpath: no build paths in the binary. cosign's version string comes from its own ldflags variable.
  (cd "$dir" && nice go build -trimpath -tags "${TAGS[$tool]}" -o "$tmp" \
     -ldflags "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=${VERSION[$tool]}" "${PACKAGE[$tool]}")
  mv "$tmp" "$out"
  echo "go-tools: built $tool ${VERSION[$tool]} in $((SECONDS - start)) s ($out)"
  built=1
done
# The compiled packages (~1.5 GB) serve only a rebuild; the module cache (~2.2 GB) is kept for a version bump.
if [ "${built:-0}" = 1 ]; then go clean -cache; fi
