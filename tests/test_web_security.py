"""TLS, client certificates and basic authentication on the HTTP endpoints (``http.web_config_file``).

Everything is real: a test CA made here (``cryptography``), certificates for 127.0.0.1, HTTPS requests
through aiohttp/ssl against a real drwatch daemon, bcrypt hashes, and a real Prometheus scraping the
TLS + basic-auth endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from cryptography import x509

from drwatch.config.model import HttpConfig, load_config, parse_config
from drwatch.core.errors import ConfigError
from drwatch.engine.daemon import Daemon
from drwatch.engine.sdnotify import Notifier
from tests.support.helpers import (
    DaemonProcess,
    PrometheusServer,
    basic_config,
    free_port,
    populate,
    run_cli,
    write_config,
)
from tests.support.pki import Pair, ScratchCA

PATHS = ["/", "/metrics", "/api/v1/status", "/-/healthy", "/-/ready"]
USER, PASSWORD = "prometheus", "scrape-Pa55-ok"
COST = 4  # bcrypt's minimum: fast tests; production hashes use 10+


def bcrypt_hash(password: str, cost: int = COST, prefix: str = "$2b$") -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
    return prefix + hashed[4:]  # $2y$ (htpasswd, the toolkit's docs) is the same algorithm as $2b$


def client_ssl(ca: ScratchCA | None, client: Pair | None = None, **options: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert_path)) if ca else ssl.create_default_context()
    if client is not None:
        ctx.load_cert_chain(client.cert, client.key)
    for name, value in options.items():
        setattr(ctx, name, value)
    return ctx


# --- daemon with a web config --------------------------------------------------------------------------

@dataclass
class Env:
    tmp: Path
    ca: ScratchCA
    server: Pair
    config: Path
    web: Path


def write_web(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)


def tls_doc(env_or_server: Pair, **tls: Any) -> dict[str, Any]:
    return {"cert_file": env_or_server.cert.name, "key_file": env_or_server.key.name, **tls}


@pytest.fixture
def env(tmp_path: Path) -> Env:
    pki = tmp_path / "pki"
    ca = ScratchCA(pki, "trusted")
    server = ca.server()
    populate(tmp_path)
    web = pki / "web.yml"  # relative certificate names resolve next to the web config file
    write_web(web, {"tls_server_config": tls_doc(server),
                    "http_server_config": {"headers": {"X-Frame-Options": "deny",
                                                       "X-Content-Type-Options": "nosniff",
                                                       "Strict-Transport-Security": "max-age=31536000"}},
                    "basic_auth_users": {USER: bcrypt_hash(PASSWORD, prefix="$2y$"),
                                         "admin": bcrypt_hash("other-secret")}})
    cfg = basic_config(tmp_path)
    cfg["http"]["web_config_file"] = "pki/web.yml"
    return Env(tmp_path, ca, server, write_config(tmp_path / "drwatch.yaml", cfg), web)


@dataclass
class Running:
    daemon: Daemon
    port: int

    def url(self, path: str, scheme: str = "https") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def running(config: Path) -> AsyncIterator[Running]:
    daemon = Daemon(load_config(config), str(config), notifier=Notifier(env={}))
    task = asyncio.create_task(daemon.run())
    deadline = time.monotonic() + 30
    while not (daemon.state is not None and daemon.state.ready and daemon.http_port):
        if task.done():
            raise AssertionError(f"daemon stopped: {task.result()}")
        assert time.monotonic() < deadline, "daemon not ready"
        await asyncio.sleep(0.02)
    try:
        yield Running(daemon, daemon.http_port)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


async def fetch(url: str, ctx: ssl.SSLContext | None, auth: tuple[str, str] | None = None,
                method: str = "GET") -> tuple[int, dict[str, str], str]:
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()} if auth else {}
    async with aiohttp.ClientSession() as session, \
            session.request(method, url, ssl=ctx if ctx is not None else False, headers=headers,
                            timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def peer_serial(port: int, ctx: ssl.SSLContext) -> int:
    """The serial number of the certificate the server presents on a new connection."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return int(x509.load_der_x509_certificate(der).serial_number)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


# --- tests ---------------------------------------------------------------------------------------------

def test_default_listen_stays_loopback() -> None:
    """Without configuration drwatch listens on loopback only, and no web config means plain HTTP."""
    http = HttpConfig()
    assert http.host == "127.0.0.1" and http.web_config_file is None


async def test_every_path_needs_basic_auth_over_tls(env: Env) -> None:
    """With basic_auth_users every path (health and readiness included, as in exporter-toolkit) answers 401
    with ``WWW-Authenticate: Basic`` without credentials, with a wrong password and for an unknown user; the
    right credentials (a ``$2y$`` htpasswd-style hash) get 200; configured headers are on every response."""
    ctx = client_ssl(env.ca)
    async with running(env.config) as srv:
        for path in PATHS:
            for auth in (None, (USER, "wrong-password"), ("nobody", PASSWORD), ("admin", PASSWORD)):
                status, headers, _ = await fetch(srv.url(path), ctx, auth)
                assert status == 401, (path, auth)
                assert headers["WWW-Authenticate"] == "Basic"
                assert headers["X-Frame-Options"] == "deny"
            status, headers, body = await fetch(srv.url(path), ctx, (USER, PASSWORD))
            assert status == 200, (path, body)
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Strict-Transport-Security"] == "max-age=31536000"
        status, headers, _ = await fetch(srv.url("/no-such-page"), ctx, (USER, PASSWORD))
        assert status == 404 and headers["X-Frame-Options"] == "deny"
        assert (await fetch(srv.url("/-/reload"), ctx, None, "POST"))[0] == 401
        assert (await fetch(srv.url("/-/reload"), ctx, ("admin", "other-secret"), "POST"))[0] == 200
        status, _, body = await fetch(srv.url("/metrics"), ctx, (USER, PASSWORD))
        assert "drwatch_build_info" in body


async def test_plain_http_and_untrusted_server_are_refused(env: Env) -> None:
    """A plain-HTTP request to the TLS port gets no HTTP answer (the handshake fails and the connection is
    closed), and a client that does not trust the test CA refuses the server's certificate."""
    async with running(env.config) as srv:
        with pytest.raises(aiohttp.ClientError):
            await fetch(srv.url("/metrics", scheme="http"), None, (USER, PASSWORD))
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await fetch(srv.url("/metrics"), client_ssl(None), (USER, PASSWORD))
        other = ScratchCA(env.tmp / "other", "untrusted")
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await fetch(srv.url("/metrics"), client_ssl(other), (USER, PASSWORD))


async def test_client_certificates_required_and_verified(env: Env) -> None:
    """RequireAndVerifyClientCert: a certificate from the client CA passes; none, one from another CA and an
    expired one are refused in the handshake; ``client_allowed_sans`` refuses (403) a valid certificate whose
    SAN is not listed."""
    client_ca = ScratchCA(env.tmp / "clients", "clients")
    good, other_name = client_ca.client("prometheus"), client_ca.client("intruder")
    expired = client_ca.client("prometheus-old", expired=True)
    rogue = ScratchCA(env.tmp / "rogue", "rogue").client("prometheus")
    write_web(env.web, {"tls_server_config": tls_doc(env.server, client_auth_type="RequireAndVerifyClientCert",
                                                     client_ca_file=str(client_ca.cert_path),
                                                     client_allowed_sans=["prometheus", "prometheus-old"])})
    async with running(env.config) as srv:
        status, _, body = await fetch(srv.url("/metrics"), client_ssl(env.ca, good))
        assert status == 200 and "drwatch_build_info" in body
        for client in (None, rogue, expired):
            with pytest.raises(aiohttp.ClientError):
                await fetch(srv.url("/metrics"), client_ssl(env.ca, client))
        status, _, _ = await fetch(srv.url("/metrics"), client_ssl(env.ca, other_name))
        assert status == 403


async def test_tls_versions_and_cipher_suites(env: Env) -> None:
    """min/max_version and cipher_suites (Go names) are enforced: a TLS 1.2-only client cannot reach a TLS 1.3
    server; a TLS 1.2 server with one suite negotiates exactly it and refuses a client offering another."""
    write_web(env.web, {"tls_server_config": tls_doc(env.server, min_version="TLS13")})
    async with running(env.config) as srv:
        assert (await fetch(srv.url("/-/healthy"), client_ssl(env.ca)))[0] == 200
        with pytest.raises(aiohttp.ClientError):
            await fetch(srv.url("/-/healthy"), client_ssl(env.ca, maximum_version=ssl.TLSVersion.TLSv1_2))
    write_web(env.web, {"tls_server_config": tls_doc(env.server, max_version="TLS12",
                                                     cipher_suites=["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"])})
    async with running(env.config) as srv:
        _reader, writer = await asyncio.open_connection("127.0.0.1", srv.port, ssl=client_ssl(env.ca))
        assert writer.get_extra_info("cipher")[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
        writer.close()
        await writer.wait_closed()
        narrow = client_ssl(env.ca)
        narrow.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        narrow.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(aiohttp.ClientError):
            await fetch(srv.url("/-/healthy"), narrow)


async def test_reload_rotates_certificate_and_users_and_keeps_them_on_a_bad_file(env: Env) -> None:
    """A reload re-reads the web config: a renewed certificate and a new user list apply to new connections
    without a restart; a broken file is rejected (500, drwatch_config_last_reload_successful 0) and the
    running certificate and users stay in force."""
    ctx = client_ssl(env.ca)
    async with running(env.config) as srv:
        assert await peer_serial(srv.port, ctx) == env.server.serial
        renewed = env.ca.server("server-renewed")
        write_web(env.web, {"tls_server_config": tls_doc(renewed),
                            "basic_auth_users": {USER: bcrypt_hash("rotated-password")}})
        status, _, body = await fetch(srv.url("/-/reload"), ctx, (USER, PASSWORD), "POST")
        assert status == 200, body
        assert await peer_serial(srv.port, ctx) == renewed.serial
        assert (await fetch(srv.url("/metrics"), ctx, (USER, PASSWORD)))[0] == 401
        assert (await fetch(srv.url("/metrics"), ctx, (USER, "rotated-password")))[0] == 200

        write_web(env.web, {"tls_server_config": {**tls_doc(env.server), "bogus": 1},
                            "basic_auth_users": {USER: bcrypt_hash("third-password")}})
        status, _, body = await fetch(srv.url("/-/reload"), ctx, (USER, "rotated-password"), "POST")
        assert status == 500
        assert "http.web_config_file: pki/web.yml: tls_server_config.bogus: unknown key" in body
        assert await peer_serial(srv.port, ctx) == renewed.serial
        status, _, metrics = await fetch(srv.url("/metrics"), ctx, (USER, "rotated-password"))
        assert status == 200 and "drwatch_config_last_reload_successful 0.0" in metrics


async def test_bcrypt_runs_off_the_event_loop_and_successes_are_cached(env: Env) -> None:
    """A slow bcrypt check (cost 13) does not stall the event loop: a ticker on the same loop keeps ticking
    while it runs; a repeated successful login is answered from the cache, without another bcrypt."""
    write_web(env.web, {"tls_server_config": tls_doc(env.server),
                        "basic_auth_users": {USER: bcrypt_hash(PASSWORD, cost=13)}})
    ctx = client_ssl(env.ca)
    async with running(env.config) as srv:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        started = time.monotonic()
        assert (await fetch(srv.url("/metrics"), ctx, (USER, PASSWORD)))[0] == 200
        first = time.monotonic() - started
        stop.set()
        await tick
        started = time.monotonic()
        assert (await fetch(srv.url("/metrics"), ctx, (USER, PASSWORD)))[0] == 200
        cached = time.monotonic() - started
        assert first > 0.2, f"a cost-13 bcrypt took only {first:.3f}s?"
        assert max(gaps) < first / 2, f"event loop stalled {max(gaps):.3f}s during a {first:.3f}s check"
        assert cached < first / 3, (cached, first)


@pytest.mark.parametrize(("doc", "path", "message"), [
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "bogus": 1}},
     "tls_server_config.bogus", "unknown key"),
    ({"nonsense": {}}, "nonsense", "unknown key"),
    ({"basic_auth_users": {"alice": "plain-text-password"}}, "basic_auth_users", "not a bcrypt hash"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key",
                            "client_auth_type": "RequireAndVerifyClientCert"}},
     "tls_server_config", "needs client_ca_file"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key",
                            "client_auth_type": "RequireAnyClientCert", "client_ca_file": "ca.pem"}},
     "tls_server_config.client_auth_type", "not supported"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "other.key"}},
     "tls_server_config.cert_file", "not a matching"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "missing.key"}},
     "tls_server_config.key_file", "no such file"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "min_version": "TLS14"}},
     "tls_server_config.min_version", "TLS12"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "cipher_suites": ["RC4"]}},
     "tls_server_config.cipher_suites", "unknown or insecure"),
    ({"http_server_config": {"headers": {"X-Frame-Options": "allow-all"}}},
     "http_server_config.headers", "expected one of deny, sameorigin"),
    ({"rate_limit": {"interval": "1s", "burst": 0}}, "rate_limit", "burst must be at least 1"),
])
def test_invalid_web_config_is_a_config_error_with_a_path(tmp_path: Path, doc: dict[str, Any], path: str,
                                                         message: str) -> None:
    """Every mistake in the web config is a configuration error naming the field inside the file (and never
    repeating a pasted password)."""
    ca = ScratchCA(tmp_path, "t")
    pair = ca.server()
    ca.server("other")
    write_web(tmp_path / "web.yml", doc)
    text = yaml.safe_dump({"http": {"web_config_file": "web.yml"}})
    with pytest.raises(ConfigError) as err:
        parse_config(text, source=str(tmp_path / "drwatch.yaml"))
    problems = [str(p) for p in err.value.problems]
    assert any(p.startswith(f"http.web_config_file: web.yml: {path}") and message in p for p in problems), problems
    assert "plain-text-password" not in str(err.value)
    assert pair.cert.exists()


def test_check_config_exit_78_and_world_readable_warning(env: Env) -> None:
    """`drwatch check-config` exits 78 with the path of an unknown key in the web config; a valid one passes
    (summary says tls and basic-auth), with a warning when the web config or the TLS key is world-readable."""
    result = run_cli("check-config", str(env.config))
    assert result.returncode == 0, result.stderr
    assert "tls basic-auth" in result.stdout and "warning" not in result.stderr
    env.web.chmod(0o644)
    env.server.key.chmod(0o644)
    result = run_cli("check-config", str(env.config))
    assert result.returncode == 0
    assert f"warning: http.web_config_file: {env.web} is readable by every user" in result.stderr
    assert f"tls_server_config.key_file: {env.server.key} is readable by every user" in result.stderr
    write_web(env.web, {"tls_server_config": {**tls_doc(env.server), "client_auth": "x"}})
    result = run_cli("check-config", str(env.config))
    assert result.returncode == 78
    assert "http.web_config_file: pki/web.yml: tls_server_config.client_auth: unknown key" in result.stderr


def test_prometheus_scrapes_the_tls_basic_auth_endpoint(env: Env) -> None:
    """A real Prometheus scrapes drwatch over HTTPS with mTLS and basic auth (up == 1, drwatch metrics
    stored); a job with a wrong password is refused (up == 0)."""
    client_ca = ScratchCA(env.tmp / "clients", "clients")
    scraper = client_ca.client("prometheus")
    write_web(env.web, {"tls_server_config": tls_doc(env.server, client_auth_type="RequireAndVerifyClientCert",
                                                     client_ca_file=str(client_ca.cert_path)),
                        "basic_auth_users": {USER: bcrypt_hash(PASSWORD)}})
    port = free_port()
    cfg = yaml.safe_load(env.config.read_text())
    cfg["http"]["listen"] = f"127.0.0.1:{port}"
    write_config(env.config, cfg)
    daemon = DaemonProcess(env.config, port)
    daemon.start(wait_ready=False)
    tls = {"ca_file": str(env.ca.cert_path), "cert_file": str(scraper.cert), "key_file": str(scraper.key)}
    prom = PrometheusServer(env.tmp / "prom", [f"127.0.0.1:{port}"], scrape_overrides=[
        {"job_name": "drwatch", "scheme": "https", "tls_config": tls,
         "basic_auth": {"username": USER, "password": PASSWORD}},
        {"job_name": "drwatch-wrong-password", "scheme": "https", "tls_config": tls,
         "basic_auth": {"username": USER, "password": "not-the-password"}},
    ])
    try:
        prom.start()
        up = prom.wait_query('up{job="drwatch"} == 1', timeout=60)
        assert up[0]["value"][1] == "1"
        assert prom.wait_query('drwatch_build_info{job="drwatch"}', timeout=30)
        down = prom.wait_query('up{job="drwatch-wrong-password"}', timeout=30)
        assert down[0]["value"][1] == "0"
    finally:
        prom.stop()
        daemon.stop()
