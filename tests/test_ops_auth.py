"""Safe by default: loopback binding, bearer-token auth, TLS and mTLS."""
from __future__ import annotations

import ipaddress
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from snakepit_bridge.client import Client
from snakepit_bridge.exitcodes import ExitCode
from tests.bridge_process import ROOT, SCRIPT
from tests.handlers_ops import wait_until

TOKEN = "s3cret-token-for-tests"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A bridge expected to refuse to start."""
    import os

    return subprocess.run([sys.executable, str(SCRIPT), "--port", "0", *args], cwd=ROOT, timeout=15,
                          stdin=subprocess.PIPE, capture_output=True, env={**os.environ, **(env or {})})


# -- binding ---------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_non_loopback_host_needs_token_tls_or_insecure(host):
    proc = _run("--host", host)
    assert proc.returncode == ExitCode.CONFIG
    err = proc.stderr.decode()
    assert "non-loopback" in err and "--insecure" in err and "--auth-token-file" in err
    assert proc.stdout == b""


def test_default_host_is_loopback(bridge):
    psutil = pytest.importorskip("psutil")
    listening = [c.laddr for c in psutil.Process(bridge.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN]
    # gRPC may listen on a v4-mapped IPv6 socket (::ffff:127.0.0.1): still loopback only.
    ips = [ipaddress.ip_address(addr.ip) for addr in listening]
    assert ips and all((getattr(ip, "ipv4_mapped", None) or ip).is_loopback for ip in ips), listening


def test_insecure_allows_all_interfaces(spawn_bridge):
    b = spawn_bridge("--host", "0.0.0.0", "--insecure")
    with Client(b.target) as c:
        assert c.execute("ping").success


def test_token_allows_all_interfaces(spawn_bridge):
    b = spawn_bridge("--host", "0.0.0.0", env={"SNAKEPIT_BRIDGE_AUTH_TOKEN": TOKEN})
    with Client(b.target, token=TOKEN) as c:
        assert c.execute("ping").success


def test_empty_token_file_is_refused(tmp_path):
    empty = tmp_path / "token"
    empty.write_text("\n")
    proc = _run("--auth-token-file", str(empty))
    assert proc.returncode == ExitCode.CONFIG and "empty" in proc.stderr.decode()


# -- token -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def token_bridge(tmp_path_factory):
    from tests.bridge_process import Bridge

    path = tmp_path_factory.mktemp("auth") / "token"
    path.write_text(TOKEN + "\n")
    with Bridge("--auth-token-file", str(path)) as b:
        yield b


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", ""])
def test_missing_or_wrong_token_is_unauthenticated(token_bridge, token):
    with Client(token_bridge.target, token=token) as c:
        for call in (lambda: c.execute("ping"), lambda: list(c.stream("ping_stream", {"count": 2})),
                     lambda: c.health(), lambda: c.info()):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_right_token_works_unary_and_streaming(token_bridge):
    with Client(token_bridge.target, token=TOKEN) as c:
        assert c.execute("ping").success
        chunks = list(c.stream("ping_stream", {"count": 3}))
        assert len(chunks) == 4 and chunks[-1].is_final
        assert c.health().healthy


def test_token_refusals_are_logged_and_the_worker_keeps_serving(token_bridge):
    with Client(token_bridge.target, token="nope") as bad, Client(token_bridge.target, token=TOKEN) as good:
        with pytest.raises(grpc.RpcError):
            bad.execute("ping")
        assert good.execute("ping").success
    assert wait_until(lambda: "unauthenticated call refused" in token_bridge.stderr_text(), 3) is not None
    text = token_bridge.stderr_text()
    assert "method=/snakepit.SnakepitBridge/Execute" in text
    assert TOKEN not in text and "nope" not in text  # tokens never reach the log


def test_grpc_health_check_is_exempt_but_watch_is_not(token_bridge):
    """Kubernetes probes carry no token: Health/Check answers without one."""
    with grpc.insecure_channel(token_bridge.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            next(stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- TLS -------------------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _issue(name: str, cn: str, cwd: Path, extensions: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd)
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=cwd)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """A throwaway CA, a server certificate for localhost/127.0.0.1, a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make test certificates")
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=snakepit-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=d)
    _issue("server", "localhost", d, "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _issue("client", "snakepit-client", d, "extendedKeyUsage=clientAuth\n")
    return d


def _tls_client(target: str, certs: Path, *, client_cert: bool = False) -> Client:
    kwargs = {}
    if client_cert:
        kwargs = dict(private_key=(certs / "client.key").read_bytes(),
                      certificate_chain=(certs / "client.pem").read_bytes())
    creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes(), **kwargs)
    return Client(target, credentials=creds)


def test_tls_client_works(spawn_bridge, certs):
    b = spawn_bridge("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"))
    with _tls_client(b.target, certs) as c:
        assert c.execute("ping").success
        assert list(c.stream("ping_stream", {"count": 2}))[-1].is_final
    with Client(b.target) as plain, pytest.raises(grpc.RpcError) as info:
        plain.execute("ping", timeout=3)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_requires_a_client_certificate(spawn_bridge, certs):
    b = spawn_bridge("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
                     "--tls-client-ca", str(certs / "ca.pem"))
    with _tls_client(b.target, certs, client_cert=True) as c:
        assert c.execute("ping").success
    with _tls_client(b.target, certs) as c, pytest.raises(grpc.RpcError) as info:
        c.execute("ping", timeout=3)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_and_token_together(spawn_bridge, certs):
    b = spawn_bridge("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
                     "--host", "0.0.0.0", env={"SNAKEPIT_BRIDGE_AUTH_TOKEN": TOKEN})
    creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes())
    with Client(b.target, credentials=creds, token=TOKEN) as c:
        assert c.execute("ping").success
    with Client(b.target, credentials=creds) as c, pytest.raises(grpc.RpcError) as info:
        c.execute("ping")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_tls_cert_without_key_is_a_config_error(certs):
    proc = _run("--tls-cert", str(certs / "server.pem"))
    assert proc.returncode == ExitCode.CONFIG and "--tls-key" in proc.stderr.decode()


def test_missing_tls_files_are_a_clear_config_error(tmp_path):
    missing = tmp_path / "nope.pem"
    proc = _run("--tls-cert", str(missing), "--tls-key", str(missing))
    assert proc.returncode == ExitCode.CONFIG
    assert "cannot start" in proc.stderr.decode() and str(missing) in proc.stderr.decode()
    assert proc.stdout == b""


# -- unit: the token check itself ------------------------------------------------------

@pytest.mark.parametrize("metadata,ok", [
    ((("authorization", f"Bearer {TOKEN}"),), True),
    ((("x-other", "1"), ("authorization", f"Bearer {TOKEN}".encode())), True),
    ((("authorization", TOKEN),), False),                 # no scheme
    ((("authorization", f"Basic {TOKEN}"),), False),
    ((("authorization", f"Bearer {TOKEN} "),), False),    # exact match only
    ((("authorization", f"Bearer {TOKEN[:-1]}"),), False),
    ((), False),
    (None, False),
])
def test_token_interceptor_authorized(metadata, ok):
    from snakepit_bridge.auth import TokenInterceptor

    assert TokenInterceptor(TOKEN).authorized(metadata) is ok
