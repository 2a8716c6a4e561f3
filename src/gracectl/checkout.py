"""Where the checkout gracectl runs from keeps its files: the Dockerfile, releases/, smoke_tests/, the Jenkinsfile.
The one owner of those paths (every module that reads one names it from here)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # src/gracectl/checkout.py -> the checkout
DOCKERFILE = REPO_ROOT / "vllm" / "Dockerfile"
RELEASES = REPO_ROOT / "releases"
SMOKE_TESTS = REPO_ROOT / "smoke_tests"
JENKINSFILE = REPO_ROOT / "Jenkinsfile"
# Where this checkout's source is published: the image's org.opencontainers.image.source, the provenance's source
IMAGE_SOURCE = "https://github.com/grace-gpu-containers/grace-gpu-containers"
