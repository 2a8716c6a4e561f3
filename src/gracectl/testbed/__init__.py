"""The local test bed (`gracectl testbed`, `gracectl rehearse`): real dockerd, registry, qemu and STAND-IN
mirrors of every external input of vllm/Dockerfile. Nothing outside this package and commands/testbed.py
imports it: production code runs the same against the real inputs.

    bed.py              the facade: Testbed.up / status / down
    processes.py        the one place a daemon is started, waited for and stopped
    registry_server.py  a real docker-registry with its own config (the test bed's, and the tests' own)
    host.py             Debian packages, binfmt for arm64
    base_images.py      debootstrap base images, pushed as multi-arch indexes
    standins.py         STAND-IN git repositories and package index
    mirror_file.py      the mirror file that points the manifests' inputs at the test bed
    state.py            state.json: what `up` started and built
    rehearse.py         the whole pipeline, walked on the test bed
"""

from gracectl.testbed.bed import Testbed
from gracectl.testbed.state import State, state_dir

__all__ = ["State", "Testbed", "state_dir"]
