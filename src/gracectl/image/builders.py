"""Which builder runs a plan's build, and its command line: the node's dockerd (`docker build` with BuildKit, the
default where no builder is named) or a named buildx builder (`docker buildx build --builder NAME`: e.g. remote
BuildKit daemons on the site's arm64 build agents, created with `docker buildx create --driver remote`).

Through a buildx builder the registry is where results go: with a push the builder pushes the image itself (no
`--load`: nothing is shipped back into a node's dockerd when the next stage pulls by digest), as an OCI index that
names the image's platform, and `--metadata-file` says the digest it pushed. The registry cache (`mode=max`) is
what the builder's nodes share.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from gracectl.adapters import docker
from gracectl.errors import GraceError, ToolMissingError, UsageError

DOCKERD = ""  # no builder named: the node's own dockerd
# buildx's own rule for a builder's name (docker buildx create --name)
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
BUILDX_HINT = ("bash scripts/go-tools.sh --install-buildx-plugin (buildx from its Go module, as docker's CLI "
               "plugin in $DOCKER_CONFIG/cli-plugins, else ~/.docker/cli-plugins)")


def check_name(builder: str) -> str:
    if builder and not NAME_RE.match(builder):
        raise UsageError(f"--builder must be a buildx builder's name (letters, digits, '_', '.', '-'), got {builder!r}")
    return builder


def describe(builder: str) -> str:
    """What `plan` and `doctor` say the build runs on."""
    return f"buildx builder {builder}" if builder else "dockerd (docker build, BuildKit)"


def buildx_command(builder: str, common: list[str], *, context: str, cache_ref: str = "", twin_cache_ref: str = "",
                   push: bool = False, by_digest_to: str = "", metadata_file: str | None = None) -> list[str]:
    """`docker buildx build --builder NAME ...`: `common` holds what every builder takes (platform, target, file,
    network, build args, tags).

    push: the builder pushes an OCI index carrying the image and its platform (BUILDKIT_MULTI_PLATFORM makes the
    dockerfile frontend return a platform map even for one platform, hence an index); no BuildKit attestations
    (gracectl signs its own provenance and SBOM). Without a push the image is loaded into the node's dockerd.
    `by_digest_to` (REGISTRY/REPO, with push): pushed there by digest ONLY, no tag (the pipeline's build stage:
    nothing named points at an image before its smoke passed; the push stage tags that digest).
    `twin_cache_ref`: the cache of the release pair's other image (tfa <-> fallback), read too: the two share every
    stage but triton_kernels' and the image's own metadata, so the second of the pair builds from the first's.
    """
    cmd = ["docker", "buildx", "build", "--builder", check_name(builder), *common, "--progress", "plain"]
    if cache_ref:
        for ref in (cache_ref, twin_cache_ref):
            if ref:
                cmd += ["--cache-from", f"type=registry,ref={ref}"]
        cmd += ["--cache-to", f"type=registry,ref={cache_ref},mode=max"]
    if push:
        output = (f"type=image,name={by_digest_to},push=true,push-by-digest=true,oci-mediatypes=true" if by_digest_to
                  else "type=registry,oci-mediatypes=true")
        cmd += ["--build-arg", "BUILDKIT_MULTI_PLATFORM=1", "--provenance=false", "--sbom=false", "--output", output]
    else:
        cmd += ["--load"]
    if metadata_file:
        cmd += ["--metadata-file", metadata_file]
    return [*cmd, context]


@dataclass(frozen=True)
class Pushed:
    digest: str  # what the builder pushed (the OCI index's digest)
    node: str  # the builder node that ran the build (buildx.build.ref: BUILDER/NODE/REF)


def read_metadata(path: Path) -> Pushed:
    """The digest and node of a buildx build from its --metadata-file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GraceError(f"buildx wrote no readable metadata file {path}: {exc}") from None
    digest = data.get("containerimage.digest", "")
    if not re.match(r"^sha256:[0-9a-f]{64}$", digest):
        raise GraceError(f"buildx metadata {path} names no pushed digest (containerimage.digest {digest!r})")
    ref = data.get("buildx.build.ref", "")
    return Pushed(digest=digest, node=ref.split("/")[1] if ref.count("/") >= 2 else "")


def inspect(builder: str) -> str:
    """`docker buildx inspect NAME`'s first lines as one: its driver and nodes; ToolMissingError or GraceError
    (one line) when buildx is missing or the builder is unknown."""
    done = docker.run(["buildx", "version"], check=False, echo=False, timeout=30)
    if done.returncode != 0:
        raise ToolMissingError(f"docker has no buildx plugin ({docker.binary()}): {BUILDX_HINT}")
    done = docker.run(["buildx", "inspect", builder], check=False, echo=False, timeout=60)
    if done.returncode != 0:
        raise GraceError(f"buildx has no builder {builder!r}: create it (`docker buildx create --name {builder} "
                         f"--driver remote tcp://AGENT:1234`; CLAWMINE.md, \"Builders\")")
    fields = {}
    nodes = []
    for line in done.stdout.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "Driver" and "driver" not in fields:
            fields["driver"] = value
        elif key == "Name" and fields:
            nodes.append(value)
        elif key == "Endpoint" and nodes:
            nodes[-1] += f" ({value})"
    return f"buildx builder {builder}: driver {fields.get('driver', '?')}, nodes {', '.join(nodes) or '?'}"
