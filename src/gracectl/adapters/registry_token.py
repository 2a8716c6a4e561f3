"""Registry authorization as the distribution token spec defines it (docs/spec/auth/token.md), and HTTP basic.

The first request goes out without credentials; the registry's 401 says how to authorize:
  - `WWW-Authenticate: Basic realm=...`: the credentials as HTTP basic, to the registry;
  - `WWW-Authenticate: Bearer realm="https://auth/token",service="reg",scope="repository:r:pull,push"`:
    a token from the realm (GET ?service=&scope=, with the basic credentials - sent ONLY to the realm,
    never to the registry - or none for an anonymous token), then `Authorization: Bearer TOKEN`.
Tokens are kept per repository scope (pull / pull,push / delete), reused until `expires_in` (default 60 s)
runs out, and fetched again when the registry says a token is no longer good (invalid_token).
A token that still does not allow the request (insufficient_scope) is a clean refusal naming the user,
the repository and the actions - nothing is retried and nothing is written.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from gracectl.adapters.registry_auth import Credentials, login_hint
from gracectl.adapters.registry_tls import is_loopback
from gracectl.errors import RegistryError

# How a path names its repository, and the actions a method needs (what distribution checks).
_REPO_PATH = re.compile(r"^/v2/(.+?)/(manifests|blobs|tags|referrers)/")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^\s,"]+)')
EXPIRY_MARGIN_S = 5


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="x",service="y",scope="z"' -> ("bearer", {"realm": "x", ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in _CHALLENGE_PARAM.finditer(rest):
        key, value = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        params[key.lower()] = value
    return scheme.lower(), params


def needed_scope(method: str, path: str) -> str:
    """The scope a request needs: repository:REPO:pull for reads, pull,push for writes, delete; "" for /v2/."""
    match = _REPO_PATH.match(urllib.parse.urlsplit(path).path)
    if not match:
        return ""
    actions = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(method, "pull,push")
    return f"repository:{match.group(1)}:{actions}"


ACTION_ORDER = ("pull", "push", "delete")


def merge_scopes(*scopes: str) -> str:
    """Space-separated scopes, the actions of each resource merged in one order: the registry's challenge may
    say `push,pull` where gracectl says `pull,push` for the same need (one scope then, not two)."""
    merged: dict[str, set[str]] = {}
    for scope in " ".join(scopes).split():
        resource, _, actions = scope.rpartition(":")
        merged.setdefault(resource or scope, set()).update(a for a in actions.split(",") if a and resource)
    order = {a: i for i, a in enumerate(ACTION_ORDER)}
    return " ".join(f"{r}:{','.join(sorted(a, key=lambda x: (order.get(x, len(order)), x)))}" if a else r
                    for r, a in merged.items())


def _covers(have: str, need: str) -> bool:
    """Does a token granted for the scopes `have` (space separated) serve a request needing scope `need`?
    Yes when one of them names the same resource with at least the actions needed."""
    n_resource, _, n_actions = need.rpartition(":")
    for scope in have.split(" "):
        h_resource, _, h_actions = scope.rpartition(":")
        if scope == need or (h_resource == n_resource and set(n_actions.split(",")) <= set(h_actions.split(","))):
            return True
    return False


@dataclass
class _Token:
    value: str
    scope: str
    expires: float  # time.monotonic()


# send(method, url, headers) -> (status, headers, body): the registry client's bounded transport.
Send = Callable[[str, str, dict], tuple]


class Authorizer:
    def __init__(self, host: str, credentials: Credentials | None, *, insecure: bool = False):
        self.host = host
        self.credentials = credentials
        self.insecure = insecure  # an insecure registry's realm may be plain http too
        self.scheme = ""  # "", "basic" or "bearer": learnt from the first 401
        self.realm = ""
        self.service = ""
        self.tokens: list[_Token] = []

    def header(self, method: str, path: str, send: Send) -> dict[str, str]:
        """The Authorization header for a request to the registry (fetching a token when none fits)."""
        if self.scheme == "basic" and self.credentials:
            return {"Authorization": f"Basic {self.credentials.basic()}"}
        if self.scheme == "bearer":
            scope = needed_scope(method, path)
            token = self._cached(scope) or self._fetch(scope, send)
            return {"Authorization": f"Bearer {token.value}"}
        return {}

    def _cached(self, scope: str) -> _Token | None:
        now = time.monotonic()
        self.tokens = [t for t in self.tokens if t.expires > now]
        return next((t for t in self.tokens if _covers(t.scope, scope)), None)

    def challenged(self, method: str, path: str, challenge: str, send: Send, *, first: bool) -> bool:
        """The registry answered 401 with `challenge`: True to send the request again (authorized anew),
        or raise the one-line refusal. `first`: this request has not been retried yet."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.credentials:
                raise RegistryError(f"registry {self.host} requires credentials: {login_hint(self.host)}")
            if self.scheme == "basic" or not first:
                raise RegistryError(f"registry {self.host} refused the credentials of user "
                                    f"{self.credentials.username!r}: {login_hint(self.host)}")
            self.scheme = "basic"
            return True
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryError(f"registry {self.host} asks for an authorization gracectl does not speak: "
                                f"{challenge[:100]!r}")
        self.scheme, self.realm, self.service = "bearer", params["realm"], params.get("service", "")
        scope = merge_scopes(params.get("scope", ""), needed_scope(method, path))
        if first and params.get("error") != "insufficient_scope":
            # No token yet, or one the registry no longer takes (expired, revoked): fetch a fresh one.
            self.tokens = [t for t in self.tokens if not _covers(t.scope, needed_scope(method, path))]
            self._fetch(scope, send)
            return True
        who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
        error = f" ({params['error']})" if params.get("error") else ""
        raise RegistryError(f"registry {self.host} refused {method} on {scope or 'the registry'} for {who}{error}: "
                            "the token server did not grant it (ask for these rights, or use another account)")

    def _fetch(self, scope: str, send: Send) -> _Token:
        realm = urllib.parse.urlsplit(self.realm)
        safe = realm.scheme == "https" or is_loopback(realm.netloc) or self.insecure
        headers = {"Accept": "application/json"}
        if self.credentials:
            if not safe:
                raise RegistryError(f"registry {self.host} sends credentials to {self.realm}, which is not https: "
                                    "refused (the password would travel in clear text)")
            headers["Authorization"] = f"Basic {self.credentials.basic()}"
        query = [("service", self.service)] if self.service else []
        query += [("scope", s) for s in scope.split()]
        url = self.realm + ("&" if realm.query else "?") + urllib.parse.urlencode(query)
        status, _, body = send("GET", url, headers)
        if status in (401, 403):
            if self.credentials:
                raise RegistryError(f"the token server of registry {self.host} refused the credentials of user "
                                    f"{self.credentials.username!r}: {login_hint(self.host)}")
            raise RegistryError(f"registry {self.host} allows no anonymous access: {login_hint(self.host)}")
        if status != 200:
            raise RegistryError(f"the token server of registry {self.host} ({realm.netloc}) answered {status}")
        try:
            answer = json.loads(body)
            value = answer.get("token") or answer.get("access_token")
            lifetime = float(answer.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            value, lifetime = None, 0
        if not value:
            raise RegistryError(f"the token server of registry {self.host} ({realm.netloc}) gave no token")
        token = _Token(value, scope, time.monotonic() + max(1.0, lifetime - EXPIRY_MARGIN_S))
        self.tokens.append(token)
        return token
