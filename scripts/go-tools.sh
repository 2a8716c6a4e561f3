#!/usr/bin/env bash
# cosign, a sigstore-enabled skopeo, buildx and BuildKit, built from their Go modules at pinned versions, ONCE per
# machine, into the machine's cache (scripts/cache-dirs.sh: /var/cache/gracectl/go-tools/<tool>-<version>/<program>
# as root), never into the clone. Only the Go module proxy is used (no GitHub): `go mod download` fetches the module, and it is
# built inside its own module directory, so its go.mod (and any replace directive) holds.
#   bash scripts/go-tools.sh          build what is missing, print each tool's path and the build time
#   bash scripts/go-tools.sh --paths  print PROGRAM=PATH lines only (what the tests look their tools up in)
#   bash scripts/go-tools.sh --install-buildx-plugin  also link docker-buildx into ~/.docker/cli-plugins
# Why these tools: CI checks gracectl's signatures and attestations with the ecosystem's own verifiers (cosign
# verify / verify-attestation, containers' policy.json through skopeo); Debian's skopeo has sigstore disabled and
# cosign is not in Debian. CLAWMINE.md, "Signed images". buildx and BuildKit (buildkitd, buildctl): builds through
# buildx builders of remote BuildKit daemons (CLAWMINE.md, "Builders"); neither is in Debian bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cache-dirs.sh

# Pinned: the module, its version, the main package and the build tags. skopeo v1.19.0: the newest release the
# module proxy serves here; its tags keep it pure Go (no gpgme, btrfs or devicemapper headers: CGO_ENABLED=0).
# buildx v0.39.1 and BuildKit v0.35.1: the newest the module proxy serves here (2026-11-19), both built by Go 1.26.8.
COSIGN_VERSION=v3.1.3
SKOPEO_VERSION=v1.19.0
BUILDX_VERSION=v0.39.1
BUILDKIT_VERSION=v0.35.1
TOOLS=(cosign skopeo buildx buildkit)
declare -A MODULE=([cosign]=github.com/sigstore/cosign/v3 [skopeo]=github.com/containers/skopeo [buildx]=github.com/docker/buildx [buildkit]=github.com/moby/buildkit )
declare -A VERSION=([cosign]=$COSIGN_VERSION [skopeo]=$SKOPEO_VERSION [buildx]=$BUILDX_VERSION [buildkit]=$BUILDKIT_VERSION)
declare -A PACKAGE=([cosign]=./cmd/cosign [skopeo]=./cmd/skopeo [buildx]=./cmd/buildx
                    [buildkit]="./cmd/buildkitd ./cmd/buildctl")
# What each build leaves in its directory (a package's binary is named after its directory; buildx is renamed to
# the name docker looks its plugin up by).
declare -A PROGRAMS=([cosign]=cosign [skopeo]=skopeo [buildx]=docker-buildx [buildkit]="buildkitd buildctl")
declare -A TAGS=([cosign]="" [skopeo]="containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper containers_image_ostree_stub"
                 [buildx]="" [buildkit]="osusergo netgo static_build")
# Each module's own version variable, so that `--version` says the pinned version.
declare -A VERSION_VAR=([cosign]=sigs.k8s.io/release-utils/version.gitVersion [skopeo]=""
                        [buildx]=github.com/docker/buildx/version.Version
                        [buildkit]=github.com/moby/buildkit/version.Version)

tools_dir="$GRACECTL_GO_TOOLS"
tool_dir() { echo "$tools_dir/$1-${VERSION[$1]}"; }

if [ "${1:-}" = --paths ]; then
  for tool in "${TOOLS[@]}"; do
    for program in ${PROGRAMS[$tool]}; do echo "$program=$(tool_dir "$tool")/$program"; done
  done
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
built_ok() {  # every program of the tool is there and runs
  local program
  for program in ${PROGRAMS[$1]}; do "$(tool_dir "$1")/$program" --help >/dev/null 2>&1 || return 1; done
}
for tool in "${TOOLS[@]}"; do
  out=$(tool_dir "$tool")
  if built_ok "$tool"; then
    echo "go-tools: $tool ${VERSION[$tool]} cached ($out)"
    continue
  fi
  command -v go >/dev/null || { echo "error: go is not installed: $tool ${VERSION[$tool]} is built from its Go module" >&2; exit 3; }
  start=$SECONDS
  dir=$(go mod download -json "${MODULE[$tool]}@${VERSION[$tool]}" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit("error: " + d.get("Error", "no Dir")))')
  tmp="$out.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  ldflags="-s -w"
  if [ -n "${VERSION_VAR[$tool]}" ]; then ldflags+=" -X ${VERSION_VAR[$tool]}=${VERSION[$tool]}"; fi
  # -trimpath: no build paths in the binary. -o DIR/: each package's binary into the new directory.
  # shellcheck disable=SC2086  # PACKAGE may name several packages
  (cd "$dir" && nice go build -trimpath -tags "${TAGS[$tool]}" -o "$tmp/" -ldflags "$ldflags" ${PACKAGE[$tool]})
  if [ "$tool" = buildx ]; then mv "$tmp/buildx" "$tmp/docker-buildx"; fi
  rm -rf "$out" && mv "$tmp" "$out"
  echo "go-tools: built $tool ${VERSION[$tool]} in $((SECONDS - start)) s ($out)"
  built=1
done
# docker finds its CLI plugins in ~/.docker/cli-plugins (or $DOCKER_CONFIG/cli-plugins): a link to the cached
# build, so that a version bump is one re-run.
if [ "${1:-}" = --install-buildx-plugin ]; then
  plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  mkdir -p "$plugins"
  ln -sfn "$(tool_dir buildx)/docker-buildx" "$plugins/docker-buildx"
  echo "go-tools: docker buildx -> $(readlink "$plugins/docker-buildx")"
fi
# The compiled packages (~1.5 GB) serve only a rebuild; the module cache (~2.2 GB) is kept for a version bump.
if [ "${built:-0}" = 1 ]; then go clean -cache; fi
