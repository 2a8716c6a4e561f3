"""A token issuer as the distribution token spec defines it (docs/spec/auth/token.md), for the tests'
docker-registry configured with `auth: token`. It is the realm: GET /token?service=S&scope=repository:R:A,
HTTP basic credentials optional (none: an anonymous token), answers {"token", "access_token", "expires_in",
"issued_at"}. The token is a JWT (ES256) signed by a key whose certificate travels in the `x5c` header and
chains to `rootcertbundle`, with the claims the registry checks: iss, aud (= service), sub, exp, nbf, iat,
jti and `access` - only the actions this user is granted on that repository (a subset of those asked).

    issuer = TokenIssuer(tls_ca, tmp_path).start()
    issuer.grant("writer", "pw", {"": "pull,push,delete"})      # repository prefix -> actions
    issuer.grant("reader", "pw2", {"": "pull"})
    issuer.anonymous = {"public/": "pull"}
    issuer.registry_config()   # the registry's auth.token section
    issuer.requests            # [(user or None, [scopes], granted access)] - what was asked, by whom

`registry_lifetime`: how long the registry accepts a token (distribution allows 60 s of clock leeway past
`exp`, so exp is set that much earlier); `claimed_expires_in`: what the answer tells the client (a lie
when smaller than the truth is how the tests make a token expire mid-run).
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import trustme
from cryptography.hazmat.primitives import serialization

REGISTRY_LEEWAY_S = 60  # distribution's token.Leeway


class TokenIssuer:
    def __init__(self, tls_ca: trustme.CA, root: Path, *, service: str = "gracectl-test-registry",
                 issuer: str = "gracectl-test-issuer"):
        self.service, self.issuer = service, issuer
        self.root = Path(root)
        self.users: dict[str, tuple[str, dict[str, str]]] = {}
        self.anonymous: dict[str, str] = {}
        self.registry_lifetime = 300.0
        self.claimed_expires_in: float | None = None
        self.requests: list[tuple[str | None, list[str], list[dict]]] = []
        self._signer_ca = trustme.CA()
        self._signer = self._signer_ca.issue_cert("token-signer.gracectl.test")
        self._key = serialization.load_pem_private_key(self._signer.private_key_pem.bytes(), None)
        cert = self._signer.cert_chain_pems[0].bytes()
        self._x5c = [base64.b64encode(ssl.PEM_cert_to_DER_cert(cert.decode())).decode()]
        self._tls = tls_ca.issue_cert("127.0.0.1", "localhost")
        self._server: ThreadingHTTPServer | None = None

    def grant(self, user: str, password: str, grants: dict[str, str]) -> None:
        self.users[user] = (password, grants)

    @property
    def realm(self) -> str:
        # A host name, as a site's realm is: go-containerregistry (cosign) refuses a realm that is a loopback or
        # private IP literal other than the registry's own host:port (a malicious registry's SSRF).
        return f"https://localhost:{self._server.server_address[1]}/token"

    def registry_config(self) -> dict:
        bundle = self.root / "token-signer-ca.pem"
        bundle.write_bytes(self._signer_ca.cert_pem.bytes())
        return {"realm": self.realm, "service": self.service, "issuer": self.issuer, "rootcertbundle": str(bundle)}

    def _allowed(self, grants: dict[str, str], repository: str) -> set[str]:
        actions: set[str] = set()
        for prefix, granted in grants.items():
            if repository.startswith(prefix):
                actions |= set(granted.split(","))
        return actions

    def issue(self, user: str | None, scopes: list[str]) -> dict:
        grants = self.users[user][1] if user else self.anonymous
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, asked = rest.rpartition(":")
            given = sorted(set(asked.split(",")) & self._allowed(grants, name))
            if kind == "repository" and given:
                access.append({"type": "repository", "name": name, "actions": given})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "iat": now, "nbf": now - 1,
                  "exp": now + int(self.registry_lifetime) - REGISTRY_LEEWAY_S, "jti": secrets.token_hex(8),
                  "access": access}
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": self._x5c})
        self.requests.append((user, scopes, access))
        expires_in = self.claimed_expires_in if self.claimed_expires_in is not None else self.registry_lifetime
        return {"token": token, "access_token": token, "expires_in": int(expires_in),
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}

    def start(self) -> TokenIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                if url.path != "/token" or query.get("service") != [issuer.service]:
                    return self._answer(400, {"errors": [{"code": "bad request"}]})
                user = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if issuer.users.get(name, ("",))[0] != password or not password:
                        return self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                    user = name
                elif header:
                    return self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                self._answer(200, issuer.issue(user, query.get("scope", [])))

            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.configure_cert(context)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
