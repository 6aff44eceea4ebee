"""The agent's own connection to the Kubernetes API: credentials from a kubeconfig or from the
pod's service account, TLS, and one HTTP request over urllib3.

Why: the agent builds every request itself (`agent.k8s.rest`) and parses every answer itself,
so of the official client it used only credentials loading and the transport; importing that
client costs the agent about 15 MiB (pydantic, oauthlib, requests, websocket-client and
jsonschema come with it: docs/benchmarks/2026-12-06-churn-and-memory.md). This module does
what the agent used, in the same way: the service account's token is read again every minute
(projected tokens rotate), a kubeconfig's paths are relative to its own directory, its
`*-data` fields are base64, and bodies go out and come back as JSON. A kubeconfig that needs
more (credential plugins: `exec`, `auth-provider`; `proxy-url`; basic auth; a list of files
to merge) raises `Unsupported`, and `agent.k8s.clients` hands it to the official client.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import urllib3
import yaml

import agent

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_TTL = 60.0  # seconds a token read from a file is used before the file is read again
POOL_SIZE = 16  # connections kept per API server: one per reflector thread, and some

Timeout = float | tuple[float, float] | None


class ConfigError(Exception):
    """The credentials are missing or broken; the message says which field."""


class Unsupported(Exception):
    """The kubeconfig uses what only the official client does (named in the message)."""


class ApiError(Exception):
    """A response outside 2xx: its status, reason and body (the API's Status)."""

    def __init__(self, status: int, reason: str, body: bytes = b"") -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.body = body

    def __str__(self) -> str:
        text = self.body[:500].decode(errors="replace")
        return f"({self.status}) Reason: {self.reason}" + (f": {text}" if text else "")


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are to it."""

    server: str  # scheme://host[:port][/prefix]
    ca_file: str | None = None
    ca_data: bytes | None = None  # PEM
    verify: bool = True
    server_name: str | None = None  # TLS name to expect, when not the server's host
    token: str | None = None
    token_file: str | None = None
    cert_file: str | None = None
    cert_data: bytes | None = None
    key_file: str | None = None
    key_data: bytes | None = None


def in_cluster(env: Mapping[str, str], directory: str = SERVICE_ACCOUNT_DIR) -> Credentials:
    """The pod's service account: the API server's Service from the environment, the token and
    the cluster's CA from `directory`."""
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError("not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set")
    token_file = os.path.join(directory, "token")
    ca_file = os.path.join(directory, "ca.crt")
    for path in (token_file, ca_file):
        if not os.path.isfile(path):
            raise ConfigError(f"service account file {path} does not exist")
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return Credentials(f"https://{host}:{port}", ca_file=ca_file, token_file=token_file)


def from_kubeconfig(path: str) -> Credentials:
    """The current context's cluster and user of the kubeconfig at `path`."""
    if os.pathsep in path:
        raise Unsupported(f"a list of kubeconfig files ({path}) is merged by the official client")
    with open(path) as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a kubeconfig")
    base = os.path.dirname(os.path.abspath(path))
    current = doc.get("current-context")
    if not current:
        raise ConfigError(f"{path} has no current-context")
    context = _named(doc, "contexts", current, "context")
    cluster = _named(doc, "clusters", context.get("cluster"), "cluster")
    user = _named(doc, "users", context.get("user"), "user") if context.get("user") else {}
    for key in ("exec", "auth-provider", "username", "password"):
        if user.get(key):
            raise Unsupported(f"user field {key!r}")
    if cluster.get("proxy-url"):
        raise Unsupported("cluster field 'proxy-url'")
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"cluster {context.get('cluster')!r} has no server")

    def file(entry: Mapping[str, Any], key: str) -> str | None:
        value = entry.get(key)
        return os.path.join(base, str(value)) if value else None

    def data(entry: Mapping[str, Any], key: str) -> bytes | None:
        value = entry.get(key)
        if not value:
            return None
        try:
            # kubectl accepts the data wrapped over lines; anything else that is not base64 fails
            return base64.b64decode("".join(str(value).split()), validate=True)
        except ValueError as exc:
            raise ConfigError(f"{key} is not base64: {exc}") from exc

    return Credentials(
        str(server).rstrip("/"),
        ca_file=file(cluster, "certificate-authority"),
        ca_data=data(cluster, "certificate-authority-data"),
        verify=not cluster.get("insecure-skip-tls-verify", False),
        server_name=cluster.get("tls-server-name") or None,
        token=user.get("token") or None,
        token_file=file(user, "tokenFile"),
        cert_file=file(user, "client-certificate"),
        cert_data=data(user, "client-certificate-data"),
        key_file=file(user, "client-key"),
        key_data=data(user, "client-key-data"),
    )


def _named(doc: Mapping[str, Any], section: str, name: Any, field: str) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(field) or {}
            if not isinstance(value, dict):
                raise ConfigError(f"{section} entry {name!r} has no {field}")
            return value
    raise ConfigError(f"no {section} entry named {name!r}")


def tls_context(creds: Credentials) -> ssl.SSLContext:
    """Server verification by the credentials' CA (the system's without one) and the client
    certificate, if any. Certificate data is written to a private temporary directory for
    the moment `ssl` reads it (it reads certificate chains from files only)."""
    ctx = ssl.create_default_context(
        cafile=creds.ca_file, cadata=creds.ca_data.decode() if creds.ca_data else None
    )
    if not creds.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if creds.cert_file or creds.cert_data:
        with tempfile.TemporaryDirectory(prefix="podseg-tls-") as tmp:
            cert, key = creds.cert_file, creds.key_file
            if creds.cert_data is not None:
                cert = _private_file(tmp, "cert.pem", creds.cert_data)
            if creds.key_data is not None:
                key = _private_file(tmp, "key.pem", creds.key_data)
            assert cert is not None
            ctx.load_cert_chain(cert, key)
    return ctx


def _private_file(directory: str, name: str, content: bytes) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    return path


class Client:
    """Requests to one API server with one set of credentials; thread-safe (the reflectors
    share it). Tokens from files are read again after `TOKEN_TTL` seconds."""

    def __init__(self, creds: Credentials, clock: Callable[[], float] = time.monotonic) -> None:
        self.creds = creds
        self._clock = clock
        self._lock = threading.Lock()
        self._token = creds.token
        self._token_read = -TOKEN_TTL
        pool: dict[str, Any] = {"maxsize": POOL_SIZE}
        if creds.server.startswith("https:"):
            pool["ssl_context"] = tls_context(creds)
            pool["cert_reqs"] = "CERT_REQUIRED" if creds.verify else "CERT_NONE"
            if creds.server_name:
                pool["server_hostname"] = creds.server_name
                pool["assert_hostname"] = creds.server_name
        self._pool = urllib3.PoolManager(num_pools=4, **pool)
        self._user_agent = f"podseg/{agent.__version__}"
        if creds.token_file:
            self.token()  # a token file that cannot be read is a start-up error, not a 401

    def token(self) -> str | None:
        """The bearer token, read again from its file when it is older than `TOKEN_TTL`."""
        if self.creds.token_file is None:
            return self._token
        with self._lock:
            now = self._clock()
            if now - self._token_read >= TOKEN_TTL:
                try:
                    with open(self.creds.token_file) as f:
                        self._token = f.read().strip()
                    self._token_read = now
                except OSError as exc:
                    if self._token is None:
                        raise ConfigError(f"cannot read token file: {exc}") from exc
                    # Keep the last token; try the file again on the next request.
            return self._token

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        timeout: Timeout = None,
    ) -> urllib3.BaseHTTPResponse:
        """`method` on `path` (already filled in); the response unread, for streaming. Non-2xx
        raises `ApiError` (its body read)."""
        url = self.creds.server + path
        if query:
            url += "?" + urllib.parse.urlencode([(k, _query_value(v)) for k, v in query])
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        token = self.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        response = self._pool.request(
            method,
            url,
            body=data,
            headers=headers,
            timeout=_timeout(timeout),
            preload_content=False,
        )
        if not 200 <= response.status <= 299:
            raw = response.read()
            response.release_conn()
            raise ApiError(response.status, response.reason or "", raw)
        return response

    def close(self) -> None:
        self._pool.clear()


def _query_value(value: Any) -> str:
    """As the API expects it: `true`/`false` for booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _timeout(value: Timeout) -> urllib3.Timeout | None:
    """A number is the whole request's limit, a pair (connect, read); None waits forever."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return urllib3.Timeout(connect=value[0], read=value[1])
    return urllib3.Timeout(total=value)


def lines(response: Any) -> Iterator[str]:
    """The complete lines of a streamed urllib3 response (a watch: one JSON event a line), as
    text, as they arrive; invalid UTF-8 is replaced, a last line cut off without its newline
    is dropped."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", errors="replace")
