"""Build agents on this machine: BuildKit daemons, each in its own network namespace with its own address, and a
buildx builder of them (`docker buildx create --driver remote`, `--append` for each further node) - the shape of a
site's arm64 build hosts, for real, on one test machine.

Each agent: a network namespace `NAME`, a veth pair (NAME-h on the host 10.213.N.1/30, NAME-n inside 10.213.N.2/30),
buildkitd listening on tcp://10.213.N.2:1234 inside it (runc, overlayfs, its own root under the state dir).

The test bed's services (registry, git daemon, package index, PyPI proxy) listen on the host's 127.0.0.1 and the
mirror file names them there, with build steps on `--network host`. Inside a namespace 127.0.0.1 is the
namespace's own, so each agent's loopback TCP is forwarded to the host's by two NAT rules (no extra process, every
port, the build arguments unchanged - which is what lets both agents and dockerd share one cache): inside the
namespace, TCP to 127.0.0.1 is DNATed to the host end of the veth (route_localnet lets a loopback address leave
the namespace, MASQUERADE gives it the agent's source address); on the host, TCP arriving on NAME-h for its
address is DNATed to 127.0.0.1 (route_localnet on NAME-h only). Everything else goes out as from a build host
(a step's `apt-get update` reaches Debian's mirror): the namespace's default route is the host end, the host
masquerades the agent's /30 and lets its traffic through FORWARD (docker's policy there is DROP). `down` removes the
host's rules and the namespace (the veth pair and the namespace's own rules go with it).

`tmpfs_gb`: the agents' state (each daemon's content store, snapshots, cache) on a tmpfs of that size mounted over
`root`, unmounted by `down`: a build agent's first build holds its base images twice (compressed and unpacked) and
on the test machine that must not compete with the registry and dockerd for the disk.

Needs root (namespaces, iptables, mount). Nothing here is needed by production code: a site's agents are real hosts.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from gracectl.adapters import proc
from gracectl.errors import CommandFailedError, TestbedError
from gracectl.testbed.processes import pid_alive, start_daemon, stop_pid

BUILDKITD_PORT = 1234
SUBNET = "10.213"  # 10.213.N.0/30 per agent: private, and not one docker's default pools hand out


@dataclass(frozen=True)
class Agent:
    name: str  # the namespace's name, also the buildx node's
    index: int  # N of 10.213.N.0/30, from 1

    @property
    def host_if(self) -> str:
        return f"{self.name}-h"

    @property
    def agent_if(self) -> str:
        return f"{self.name}-n"

    @property
    def host_ip(self) -> str:
        return f"{SUBNET}.{self.index}.1"

    @property
    def ip(self) -> str:
        return f"{SUBNET}.{self.index}.2"

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.ip}:{BUILDKITD_PORT}"

    def host_rules(self) -> list[tuple[str, str, list[str]]]:
        """The host's rules for this agent: (table, chain, iptables arguments after -A/-C/-D CHAIN)."""
        subnet = f"{SUBNET}.{self.index}.0/30"
        return [
            # the agent's 127.0.0.1 is the host's
            ("nat", "PREROUTING", ["-i", self.host_if, "-d", self.host_ip, "-p", "tcp", "-j", "DNAT",
                                   "--to-destination", "127.0.0.1"]),
            # and it goes out as a build host does (a build step's `apt-get update` reaches Debian's mirror):
            # routed through the host, masqueraded; docker's FORWARD policy is DROP, so it is let through
            ("nat", "POSTROUTING", ["-s", subnet, "!", "-o", self.host_if, "-j", "MASQUERADE"]),
            ("filter", "FORWARD", ["-i", self.host_if, "-j", "ACCEPT"]),
            ("filter", "FORWARD", ["-o", self.host_if, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                                   "-j", "ACCEPT"]),
        ]


def buildkitd_config(registries: list[str]) -> str:
    """buildkitd.toml: the OCI worker (runc) only, plain-http registries, `--network host` allowed, no GC surprises
    mid-test. The test bed's registries speak plain http on 127.0.0.1."""
    lines = ['insecure-entitlements = ["network.host"]', "", "[worker.oci]", "  enabled = true",
             '  snapshotter = "overlayfs"', "", "[worker.containerd]", "  enabled = false", ""]
    for host in registries:
        lines += [f'[registry."{host}"]', "  http = true", "  insecure = true", ""]
    return "\n".join(lines)


def _ip(*args: str, netns: str = "") -> str:
    cmd = ["ip", "netns", "exec", netns, *args] if netns else list(args)
    return proc.run(cmd, echo=False).stdout


def _iptables_ensure(table_chain: tuple[str, str], rule: list[str], netns: str = "") -> None:
    """Add the rule unless it is there (`-C` checks): running `up` twice adds nothing. FORWARD rules go first,
    ahead of docker's chains."""
    table, chain = table_chain
    prefix = ["ip", "netns", "exec", netns, "iptables"] if netns else ["iptables"]
    if proc.run([*prefix, "-t", table, "-C", chain, *rule], check=False, echo=False).returncode != 0:
        where = ["-I", chain, "1"] if chain == "FORWARD" else ["-A", chain]
        proc.run([*prefix, "-t", table, *where, *rule], echo=False)


class BuildAgents:
    """`up()` the agents (idempotent), `builder(name)` a buildx builder of them, `down()` everything it made."""

    def __init__(self, root: Path, names: tuple[str, ...] = ("gbk-a", "gbk-b"), registries: list[str] | None = None,
                 buildkitd: str = "buildkitd", env: dict[str, str] | None = None, tmpfs_gb: int = 0):
        self.root = Path(root)
        self.tmpfs_gb = tmpfs_gb
        self.agents = [Agent(name, i + 1) for i, name in enumerate(names)]
        self.registries = registries or []
        self.buildkitd = buildkitd
        self.env = env or {}  # DOCKER_CONFIG for the docker client: where buildx keeps its builders

    def __enter__(self) -> BuildAgents:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # -- network -----------------------------------------------------------------------------------------------
    def _netns_exists(self, agent: Agent) -> bool:
        return agent.name in _ip("ip", "netns", "list").split()

    def _network(self, agent: Agent) -> None:
        if not self._netns_exists(agent):
            _ip("ip", "netns", "add", agent.name)
        if proc.run(["ip", "link", "show", agent.host_if], check=False, echo=False).returncode != 0:
            _ip("ip", "link", "add", agent.host_if, "type", "veth", "peer", "name", agent.agent_if)
            _ip("ip", "link", "set", agent.agent_if, "netns", agent.name)
            _ip("ip", "addr", "add", f"{agent.host_ip}/30", "dev", agent.host_if)
            _ip("ip", "addr", "add", f"{agent.ip}/30", "dev", agent.agent_if, netns=agent.name)
        _ip("ip", "link", "set", agent.host_if, "up")
        _ip("ip", "link", "set", agent.agent_if, "up", netns=agent.name)
        _ip("ip", "link", "set", "lo", "up", netns=agent.name)
        _ip("ip", "route", "replace", "default", "via", agent.host_ip, netns=agent.name)
        # Loopback addresses may leave the namespace (then be NATed), and arrive on the host end.
        _ip("sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1", netns=agent.name)
        Path(f"/proc/sys/net/ipv4/conf/{agent.host_if}/route_localnet").write_text("1\n")
        _iptables_ensure(("nat", "OUTPUT"), ["-d", "127.0.0.1", "-p", "tcp", "-j", "DNAT", "--to-destination",
                                            agent.host_ip], netns=agent.name)
        _iptables_ensure(("nat", "POSTROUTING"), ["-o", agent.agent_if, "-j", "MASQUERADE"], netns=agent.name)
        for table, chain, rule in agent.host_rules():
            _iptables_ensure((table, chain), rule)

    # -- buildkitd ---------------------------------------------------------------------------------------------
    def _dir(self, agent: Agent) -> Path:
        return self.root / agent.name

    def _pid(self, agent: Agent) -> int:
        try:
            return int((self._dir(agent) / "buildkitd.pid").read_text())
        except (OSError, ValueError):
            return 0

    def answers(self, agent: Agent) -> bool:
        """buildkitd on the agent's address lists its workers (asked from the host, across the veth)."""
        buildctl = str(Path(self.buildkitd).with_name("buildctl")) if os.sep in self.buildkitd else "buildctl"
        done = proc.run([buildctl, "--addr", agent.endpoint, "debug", "workers"], check=False, echo=False,
                        timeout=10)
        return done.returncode == 0

    def _start(self, agent: Agent) -> None:
        pid = self._pid(agent)
        if pid and pid_alive(pid, "buildkitd") and self.answers(agent):
            return
        folder = self._dir(agent)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "buildkitd.toml"
        config.write_text(buildkitd_config(self.registries))
        # nsenter joins the network namespace only: `ip netns exec` would also give it a mount namespace with a
        # fresh /sys and no cgroup mounts, where runc cannot run a step. nsenter execs, so the pid is buildkitd's.
        args = ["nsenter", f"--net=/run/netns/{agent.name}", self.buildkitd, "--config", str(config),
                "--root", str(folder / "root"), "--addr", agent.endpoint]

        def record(pid: int) -> None:
            (folder / "buildkitd.pid").write_text(str(pid))

        # program "": the pid runs nsenter until it execs buildkitd, so no program name holds across the start.
        start_daemon(args, what=f"buildkitd on {agent.name} ({agent.endpoint})", program="",
                     log=folder / "buildkitd.log", ready=lambda: self.answers(agent), timeout=60, record=record)

    # -- buildx ------------------------------------------------------------------------------------------------
    def _buildx(self, *args: str, check: bool = True):
        return proc.run(["/usr/bin/docker", "buildx", *args], env=self.env, check=check, echo=False, timeout=120)

    def builder(self, name: str) -> str:
        """A buildx builder of every agent (the first `create --driver remote`, each further one `--append`),
        made afresh; returns its name."""
        self._buildx("rm", name, check=False)
        for i, agent in enumerate(self.agents):
            self._buildx("create", "--name", name, "--driver", "remote", "--node", agent.name,
                         *(["--append"] if i else []), agent.endpoint)
        self._buildx("inspect", "--bootstrap", name)
        return name

    def leave(self, name: str, agent: Agent) -> None:
        """Take the agent's node out of the builder (`create --leave`): buildx sends a build to the first node of
        the platform and waits on it when it is down, it does not fail over."""
        self._buildx("create", "--name", name, "--leave", "--node", agent.name)

    def remove_builder(self, name: str) -> None:
        self._buildx("rm", name, check=False)

    # -- up / down ---------------------------------------------------------------------------------------------
    def up(self) -> BuildAgents:
        if os.geteuid() != 0:
            raise TestbedError("build agents need root (network namespaces, iptables)")
        self.mount()
        for agent in self.agents:
            self._network(agent)
            self._start(agent)
        return self

    def stop(self, agent: Agent) -> None:
        """Stop the agent's buildkitd (its network stays): the agent is down, as a host that went away."""
        pid = self._pid(agent)
        if pid:
            stop_pid(pid, "buildkitd", timeout=30)
        (self._dir(agent) / "buildkitd.pid").unlink(missing_ok=True)

    def down(self, keep_cache: bool = False) -> None:
        for agent in self.agents:
            self.stop(agent)
            for table, chain, rule in agent.host_rules():
                proc.run(["iptables", "-t", table, "-D", chain, *rule], check=False, echo=False)
            if self._netns_exists(agent):
                try:
                    _ip("ip", "netns", "del", agent.name)  # its veth pair and its own rules go with it
                except CommandFailedError:
                    time.sleep(1)
                    _ip("ip", "netns", "del", agent.name)
            if not keep_cache:
                shutil.rmtree(self._dir(agent), ignore_errors=True)
        if self._mounted() and not keep_cache:
            proc.run(["umount", str(self.root)], echo=False)

    def mount(self) -> None:
        """The tmpfs over `root` (when `tmpfs_gb`), once: what else lives there (a test's registry) may come first."""
        if self.tmpfs_gb and not self._mounted():
            self.root.mkdir(parents=True, exist_ok=True)
            proc.run(["mount", "-t", "tmpfs", "-o", f"size={self.tmpfs_gb}g,mode=0700", "gracectl-build-agents",
                      str(self.root)], echo=False)

    def _mounted(self) -> bool:
        return any(line.split()[1] == str(self.root) for line in Path("/proc/mounts").read_text().splitlines())
