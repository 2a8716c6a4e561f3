"""What `gracectl testbed up` did (<state dir>/state.json): `down` stops exactly the pids recorded here, and a
second `up` rebuilds only what changed (cache keys and content fingerprints)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gracectl.errors import TestbedError
from gracectl.testbed.processes import HOST

SUITE = "bookworm"  # Debian suite of the base images


# GRACECTL_STATE_DIR and the user's cache folder (XDG_CACHE_HOME), handed down once by the edge
# (gracectl.cli.configure_process); unset: the machine's folder, else ~/.cache.
_chosen: dict[str, Path | None] = {"state_dir": None, "cache_home": None}


def use_dirs(*, state: Path | None, cache_home: Path | None) -> None:
    """Where the test bed keeps its state (None: default_state_dir) and the user's cache folder; the edge only."""
    _chosen.update(state_dir=state, cache_home=cache_home)


def default_state_dir() -> Path:
    """One test bed per machine, whichever clone runs it (scripts/cache-dirs.sh says the same for the scripts)."""
    if os.geteuid() == 0 or os.access("/var/cache/gracectl", os.W_OK):
        return Path("/var/cache/gracectl/testbed")
    return (_chosen["cache_home"] or Path.home() / ".cache") / "gracectl" / "testbed"


def state_dir() -> Path:
    return _chosen["state_dir"] or default_state_dir()


APT_STANDIN_DIR = "nvidia-apt"  # under the package index's root


@dataclass
class State:
    registry_port: int = 5000
    git_port: int = 9418
    index_port: int = 5080
    proxy_port: int = 5090  # the caching PyPI proxy (proxpi)
    # component -> pid started by us (dockerd, git-daemon, index); the registry server keeps its own pid file
    pids: dict[str, int] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # pushed image ref -> cache key it was built from
    repos: dict[str, dict[str, str]] = field(default_factory=dict)  # upstream url -> {ref name: commit}
    fingerprints: dict[str, str] = field(default_factory=dict)  # repos/index content -> hash (rebuild on change)
    vllm_alt_ref: str = ""  # the second vLLM commit (one input changed)
    mirror_file: str = ""

    @classmethod
    def load(cls, root: Path) -> State:
        try:
            state = cls(**json.loads((root / "state.json").read_text()))
        except FileNotFoundError:
            return cls()
        except (ValueError, TypeError) as exc:
            raise TestbedError(f"{root / 'state.json'} is damaged ({exc}): run `gracectl testbed down` "
                               f"and remove it") from None
        state.pids.pop("registry", None)  # written by earlier versions: registry.pid is the one record of it
        return state

    def save(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "state.json").write_text(json.dumps(asdict(self), indent=2) + "\n")

    @property
    def registry(self) -> str:
        return f"{HOST}:{self.registry_port}"

    @property
    def index_url(self) -> str:
        return f"http://{HOST}:{self.index_port}/simple"

    @property
    def flashinfer_index_url(self) -> str:
        """The stand-in index with nothing but flashinfer-jit-cache (the real stack's FlashInfer index)."""
        return f"http://{HOST}:{self.index_port}/flashinfer/simple"

    @property
    def apt_source(self) -> str:
        """The sources line of the STAND-IN NVIDIA apt repository (gracectl.testbed.apt_standin), on the index."""
        return f"deb [trusted=yes] http://{HOST}:{self.index_port}/{APT_STANDIN_DIR} ./"

    @property
    def proxy_url(self) -> str:
        return f"http://{HOST}:{self.proxy_port}/index"

    def git_url(self, path: str = "") -> str:
        return f"git://{HOST}:{self.git_port}/{path}"

    def base_image(self, flavour: str) -> str:
        return f"{self.registry}/testbed/{flavour}:{SUITE}"
