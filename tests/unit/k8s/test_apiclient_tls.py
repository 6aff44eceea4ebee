"""The agent's own API client's credentials over real TLS: a local HTTPS server with a CA made
by `openssl` for the test, asking for a client certificate. The CA and the client certificate
from kubeconfig files (relative paths) and from `*-data` fields, `tls-server-name`, a CA that
did not sign the server refused, the in-cluster service account with its token read again
after a minute, and what the client cannot do handed to the official client."""

from __future__ import annotations

import base64
import http.server
import json
import pathlib
import ssl
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from agent.k8s import apiclient, clients

SERVER_NAME = "api.psg.test"  # the only name in the server's certificate (no IP address)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def issue(directory: pathlib.Path, name: str, subject: str, ca: str, ext: str) -> None:
    """`name`.key and `name`.crt signed by the CA files `ca`.key / `ca`.crt."""
    key, csr, crt = (str(directory / f"{name}.{s}") for s in ("key", "csr", "crt"))
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr)
    extfile = directory / f"{name}.ext"
    extfile.write_text(ext)
    openssl(
        "x509", "-req", "-in", csr, "-CA", str(directory / f"{ca}.crt"),
        "-CAkey", str(directory / f"{ca}.key"), "-CAcreateserial", "-days", "2",
        "-extfile", str(extfile), "-out", crt,
    )  # fmt: skip


def make_ca(directory: pathlib.Path, name: str) -> None:
    key, crt = str(directory / f"{name}.key"), str(directory / f"{name}.crt")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    openssl("req", "-x509", "-new", "-key", key, "-subj", f"/CN={name}", "-days", "2", "-out", crt)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    issue(d, "server", "/CN=apiserver", "ca", f"subjectAltName=DNS:{SERVER_NAME}\n")
    issue(d, "client", "/O=system:nodes/CN=system:node:psg", "ca", "extendedKeyUsage=clientAuth\n")
    return d


class Handler(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]

    def do_GET(self) -> None:
        cert = self.connection.getpeercert()  # type: ignore[attr-defined]
        subject = dict(item[0] for item in cert["subject"]) if cert else {}
        self.seen.append(
            {
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "cn": subject.get("commonName"),
            }
        )
        body = json.dumps({"kind": "PodList", "metadata": {"resourceVersion": "7"}, "items": []})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def https(pki: pathlib.Path) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A server on 127.0.0.1 with the CA's server certificate, requiring a client certificate
    of the same CA; yields its port and the requests it saw."""
    seen: list[dict[str, Any]] = []
    handler = type("H", (Handler,), {"seen": seen})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki / "server.crt"), str(pki / "server.key"))
    ctx.load_verify_locations(str(pki / "ca.crt"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def b64(path: pathlib.Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(
    directory: pathlib.Path, server: str, cluster: dict[str, Any], user: dict[str, Any]
) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = directory / "kubeconfig"
    path.write_text(json.dumps(doc))
    return str(path)


def list_pods(api: apiclient.Client) -> dict[str, Any]:
    response = api.request("GET", "/api/v1/pods", query=[("limit", 5)], timeout=(5, 5))
    found: dict[str, Any] = json.loads(response.data)
    return found


def test_ca_and_client_certificate_from_data_fields_with_tls_server_name(
    pki: pathlib.Path, https: tuple[int, list[dict[str, Any]]], tmp_path: pathlib.Path
) -> None:
    port, seen = https
    ca = b64(pki / "ca.crt")
    wrapped = "\n".join(ca[i : i + 64] for i in range(0, len(ca), 64))  # as kubectl accepts it
    cluster = {"certificate-authority-data": wrapped, "tls-server-name": SERVER_NAME}
    user = {
        "client-certificate-data": b64(pki / "client.crt"),
        "client-key-data": b64(pki / "client.key"),
    }
    api = clients.agent_client(kubeconfig(tmp_path, f"https://127.0.0.1:{port}", cluster, user))
    assert isinstance(api, apiclient.Client)
    assert list_pods(api)["metadata"]["resourceVersion"] == "7"
    assert seen == [{"path": "/api/v1/pods?limit=5", "auth": None, "cn": "system:node:psg"}]
    api.close()


def test_relative_certificate_files_and_a_token(
    pki: pathlib.Path, https: tuple[int, list[dict[str, Any]]], tmp_path: pathlib.Path
) -> None:
    port, seen = https
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_bytes((pki / name).read_bytes())
    cluster = {"certificate-authority": "ca.crt", "tls-server-name": SERVER_NAME}
    user = {"client-certificate": "client.crt", "client-key": "client.key", "token": "t0k"}
    api = clients.agent_client(kubeconfig(tmp_path, f"https://127.0.0.1:{port}", cluster, user))
    assert isinstance(api, apiclient.Client)
    list_pods(api)
    assert seen[-1]["auth"] == "Bearer t0k"
    api.close()


@pytest.mark.parametrize("wrong", ["other CA", "no tls-server-name"])
def test_a_server_the_credentials_do_not_vouch_for_is_refused(
    wrong: str,
    pki: pathlib.Path,
    https: tuple[int, list[dict[str, Any]]],
    tmp_path: pathlib.Path,
) -> None:
    port, seen = https
    ca = "other-ca.crt" if wrong == "other CA" else "ca.crt"
    cluster: dict[str, Any] = {"certificate-authority-data": b64(pki / ca)}
    if wrong != "no tls-server-name":
        cluster["tls-server-name"] = SERVER_NAME
    user = {
        "client-certificate-data": b64(pki / "client.crt"),
        "client-key-data": b64(pki / "client.key"),
    }
    api = clients.agent_client(kubeconfig(tmp_path, f"https://127.0.0.1:{port}", cluster, user))
    assert isinstance(api, apiclient.Client)
    with pytest.raises(urllib3.exceptions.MaxRetryError, match="CERTIFICATE_VERIFY_FAILED"):
        list_pods(api)
    assert seen == []
    api.close()


def test_in_cluster_reads_the_rotated_token_after_a_minute(
    pki: pathlib.Path, https: tuple[int, list[dict[str, Any]]], tmp_path: pathlib.Path
) -> None:
    port, seen = https
    (tmp_path / "token").write_text("first\n")
    (tmp_path / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port)}
    creds = apiclient.in_cluster(env, str(tmp_path))
    assert creds.server == f"https://127.0.0.1:{port}"
    # The service's address is not in the test server's certificate; the client certificate
    # stands in for a server that asks for none.
    creds = apiclient.Credentials(
        creds.server,
        ca_file=creds.ca_file,
        token_file=creds.token_file,
        server_name=SERVER_NAME,
        cert_file=str(pki / "client.crt"),
        key_file=str(pki / "client.key"),
    )
    now = [100.0]
    api = apiclient.Client(creds, clock=lambda: now[0])
    list_pods(api)
    (tmp_path / "token").write_text("second\n")  # the kubelet rotates the projected token
    now[0] += apiclient.TOKEN_TTL - 1
    list_pods(api)
    now[0] += 1
    list_pods(api)
    assert [s["auth"] for s in seen] == ["Bearer first", "Bearer first", "Bearer second"]
    api.close()


def test_in_cluster_needs_the_service_environment_and_files(tmp_path: pathlib.Path) -> None:
    with pytest.raises(apiclient.ConfigError, match="KUBERNETES_SERVICE_HOST"):
        apiclient.in_cluster({}, str(tmp_path))
    env = {"KUBERNETES_SERVICE_HOST": "fd00:198:18::1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(apiclient.ConfigError, match="token"):
        apiclient.in_cluster(env, str(tmp_path))
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("")
    assert apiclient.in_cluster(env, str(tmp_path)).server == "https://[fd00:198:18::1]:443"


@pytest.mark.parametrize(
    ("user", "cluster", "needs"),
    [
        ({"exec": {"command": "x"}}, {}, "exec"),
        ({"auth-provider": {"name": "oidc"}}, {}, "auth-provider"),
        ({"username": "a", "password": "b"}, {}, "username"),
        ({}, {"proxy-url": "http://127.0.0.1:3128"}, "proxy-url"),
    ],
)
def test_what_only_the_official_client_does_is_named(
    user: dict[str, Any], cluster: dict[str, Any], needs: str, tmp_path: pathlib.Path
) -> None:
    path = kubeconfig(tmp_path, "https://127.0.0.1:1", cluster, user)
    with pytest.raises(apiclient.Unsupported, match=needs):
        apiclient.from_kubeconfig(path)


def test_broken_credentials_are_one_clear_error(tmp_path: pathlib.Path) -> None:
    path = kubeconfig(tmp_path, "https://127.0.0.1:1", {"certificate-authority-data": "%%"}, {})
    with pytest.raises(clients.CredentialsError, match="certificate-authority-data"):
        clients.agent_client(path)
    missing = kubeconfig(tmp_path, "https://127.0.0.1:1", {"certificate-authority": "nope"}, {})
    with pytest.raises(clients.CredentialsError, match="cannot load API credentials"):
        clients.agent_client(missing)
