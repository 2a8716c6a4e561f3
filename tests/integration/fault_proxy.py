"""A fault-injecting TCP proxy in front of the real docker-registry (the integration tests' flaky network).

Each client connection carries one HTTP request (gracectl's client opens one per request); the proxy
reads its request line, forwards the bytes to the registry and treats the answer as the first matching
rule says:

    proxy = FaultProxy("127.0.0.1:5000").start()
    proxy.add("PUT", r"/manifests/v1$", "drop")      # forwarded and applied; the answer never arrives
    proxy.add("PUT", r"/manifests/v1$", "refuse")    # the connection is cut before anything is forwarded
    proxy.add("HEAD", r"/manifests/", "delay", 4)    # the answer arrives 4 s late
    proxy.add("*", r"", "stall")                     # forwarded; the answer is held until the client leaves
    proxy.add("*", r"", "drip", 0.5)                 # the answer, one byte every 0.5 s
    proxy.add("PUT", r"/manifests/x$", "late", 13)   # the whole request held 13 s, then applied (and answered)
    proxy.add("GET", r"[.]gracectl-lock$", "error", status=500, every=10)  # every 10th: 500, never forwarded
    proxy.slow_every_request(0.3)                    # every answer 0.3 s late
    proxy.address                                    # "127.0.0.1:PORT": use it as the registry host

`proxy.count("stall", answered=True)`: how many of them the registry has handled.
A rule fires `times` times (default: always), on every `every`-th request it matches (default: each);
`after=other_rule` arms it once that one has fired. `proxy.seen` lists (method, path, action) per request.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass


@dataclass
class Rule:
    method: str
    path: re.Pattern
    action: str  # pass | drop | refuse | delay | stall | drip | late | error
    seconds: float = 0.0
    times: float = float("inf")
    after: Rule | None = None  # active only once that rule has fired all its times
    status: int = 500  # what "error" answers
    every: int = 1  # fires on every `every`-th matching request
    matched: int = 0


class FaultProxy:
    def __init__(self, upstream: str):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str, str]] = []
        self.answered: list[str] = []  # the action of each request the registry has answered
        self.slow_s = 0.0
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._closed = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def add(self, method: str, path: str, action: str, seconds: float = 0.0, times: float = float("inf"),
            after: Rule | None = None, status: int = 500, every: int = 1) -> Rule:
        rule = Rule(method, re.compile(path), action, seconds, times, after, status, every)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """No rules, no slowness, counts from zero."""
        with self._lock:
            self.rules.clear()
            self.slow_s = 0.0
            self.seen.clear()
            self.answered.clear()

    def slow_every_request(self, seconds: float) -> None:
        self.slow_s = seconds

    def count(self, action: str, answered: bool = False) -> int:
        """Requests the `action` rule took; with answered=True, only those the registry has answered."""
        return (self.answered if answered else [a for *_, a in self.seen]).count(action)

    def start(self) -> FaultProxy:
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._closed.set()
        self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- plumbing ------------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _match(self, method: str, path: str) -> tuple[str, float | int]:
        with self._lock:
            for rule in self.rules:
                if rule.after and rule.after.times > 0:
                    continue
                if rule.times > 0 and rule.method in ("*", method) and rule.path.search(path):
                    rule.matched += 1
                    if rule.matched % rule.every:
                        continue
                    rule.times -= 1
                    return rule.action, rule.status if rule.action == "error" else rule.seconds
        return "pass", 0.0

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            head = b""
            while b"\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
                if head.startswith(b"\x16"):  # a TLS handshake (skopeo tries https first): the registry answers it
                    upstream = socket.create_connection(self.upstream)
                    upstream.sendall(head)
                    threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
                    _pump(upstream, client)
                    return
            method, path = (head.split(b"\r\n", 1)[0].decode(errors="replace").split(" ") + ["", ""])[:2]
            action, seconds = self._match(method, path.split("?", 1)[0])
            self.seen.append((method, path, action))
            if action == "refuse":
                _reset(client)
                return
            if action == "error":  # the registry's answer when it is overloaded or failing: never forwarded
                body = b'{"errors":[{"code":"UNKNOWN","message":"injected by the fault proxy"}]}'
                client.sendall(b"HTTP/1.1 %d Injected\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                               b"Connection: close\r\n\r\n%s" % (seconds, len(body), body))
                return
            if action == "late":
                _late(head, client, self.upstream, seconds, self.answered)
                return
            upstream = socket.create_connection(self.upstream)
            upstream.sendall(head)
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
            first = upstream.recv(65536)  # the registry has handled the request once it answers
            self.answered.append(action)
            if action == "drop":
                _reset(client)
                return
            if action in ("delay", "pass") or self.slow_s:
                time.sleep(seconds if action == "delay" else self.slow_s)
            if action == "stall":
                client.settimeout(None)
                while client.recv(65536):  # hold the answer until the client gives up
                    pass
                return
            data = first
            while data:
                if action == "drip":
                    for i in range(len(data)):
                        client.sendall(data[i:i + 1])
                        time.sleep(seconds)
                else:
                    client.sendall(data)
                data = upstream.recv(65536)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                if s is not None:
                    s.close()


def _late(head: bytes, client: socket.socket, upstream_address, seconds: float, answered: list) -> None:
    """Read the whole request, hold it `seconds`, then deliver it: a write that lands long after its sender gave
    up (a congested link, a retrying middlebox)."""
    client.settimeout(10)
    while b"\r\n\r\n" not in head:
        head += client.recv(65536)
    headers, _, body = head.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in headers.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += client.recv(65536)
    time.sleep(seconds)
    with socket.create_connection(upstream_address) as upstream:
        upstream.sendall(headers + b"\r\n\r\n" + body)
        answer = upstream.recv(65536)
    answered.append("late")
    with contextlib.suppress(OSError):  # a sender still waiting gets the registry's answer
        client.sendall(answer)


def _pump(source: socket.socket, dest: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            dest.sendall(data)
        dest.shutdown(socket.SHUT_WR)  # the client is done: let the registry close its side too
    except OSError:
        pass


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset: what a dropped connection looks like to the client."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes the pump thread blocked on this socket, so the close happens now
    except OSError:
        pass
    sock.close()
