"""The `recovery_dependencies` validator against real endpoints on loopback.

Every probe meets a real peer: the system resolver (``localhost`` resolves, a name under ``.invalid`` never does,
RFC 6761), a TCP port a server listens on and one nobody does, an HTTPS server (aiohttp) whose certificate a test
CA issued and that answers 200 or 503, a server that accepts connections and never answers, KMS keys on a moto
server (Enabled, Disabled, PendingDeletion, absent; an IAM-enforcing moto where drwatch's user may not call KMS),
and a Terraform state judged by a real ``terraform_state`` validator run first in the same runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web

from drwatch.core.errors import ConfigError
from drwatch.core.model import Outcome, Result, Severity
from drwatch.validators.dependencies import validator as deps_validator
from drwatch.validators.plugin import Latest
from tests.support.helpers import free_port
from tests.support.pki import ScratchCA
from tests.support.runs import open_runner
from tests.support.s3helpers import parse
from tests.support.s3servers import MotoServer, iam_moto_server

PROD = {"site": "dc-a", "region": "eu-west-1"}  # production's failure domain
AWAY = {"region": "eu-central-1", "site": "dc-b"}


def estate(tmp: Path, deps: list[dict[str, Any]], *, tf_state: bytes | None = None, **validator: Any) -> dict[str, Any]:
    """Asset ``data`` (production on a filesystem location in dc-a / eu-west-1) with the validator under test;
    with ``tf_state``, asset ``infra`` holds that Terraform state (in dc-b) checked by ``terraform_state``."""
    (tmp / "prod").mkdir(exist_ok=True)
    cfg: dict[str, Any] = {
        "store": {"sqlite": str(tmp / f"state-{time.time_ns()}.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "locations": {"prod": {"kind": "filesystem", "path": str(tmp / "prod"), **PROD}},
        "assets": {"data": {"rpo": "1d", "production": {"location": "prod", "prefix": ""},
                            "validators": [{"kind": "recovery_dependencies", "dependencies": deps, **validator}]}},
    }
    if tf_state is not None:
        (tmp / "tf" / "env").mkdir(parents=True, exist_ok=True)
        (tmp / "tf" / "env" / "terraform.tfstate").write_bytes(tf_state)
        cfg["locations"]["tf"] = {"kind": "filesystem", "path": str(tmp / "tf"), "site": "dc-b",
                                  "region": "eu-central-1"}
        cfg["assets"]["infra"] = {"rpo": "1d", "production": {"location": "tf", "prefix": "env"},
                                  "validators": [{"kind": "terraform_state"}]}
    return cfg


async def run(tmp: Path, cfg_dict: dict[str, Any], *, first: str | None = None) -> Result:
    """The validator through a real Runner; ``first`` names an asset whose validators run before (same store)."""
    cfg = parse(tmp, cfg_dict)
    async with open_runner(cfg, tmp / "sandboxes") as runner:
        if first is not None:
            for vcfg in cfg.assets[first].validators:
                await runner.execute(first, vcfg)
        return await runner.execute("data", cfg.assets["data"].validators[0])


def by_subject(result: Result) -> dict[str, tuple[Severity, str]]:
    return {f.subject: (f.severity, f.code) for f in result.findings if f.subject}


def tf_state(serial: int = 3, version: int = 4) -> bytes:
    return json.dumps({"version": version, "terraform_version": "1.9.5", "serial": serial,
                       "lineage": "0d7c9f7e-0000-4000-8000-000000000001", "outputs": {}, "resources": []}).encode()


# --- real peers ---------------------------------------------------------------------------------------------

@asynccontextmanager
async def tcp_listener(*, answer: bool = True) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1; it closes each connection at once, or (``answer=False``) holds it silently."""
    held: list[asyncio.StreamWriter] = []

    async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if answer:
            writer.close()
        else:
            held.append(writer)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def https_server(ca: ScratchCA, status: dict[str, int]) -> AsyncIterator[str]:
    """An HTTPS server for 127.0.0.1/localhost (certificate from ``ca``) answering ``status["code"]``."""
    pair = ca.server()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pair.cert, pair.key)

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(status=status["code"], text="probe")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"https://localhost:{port}/health"
    finally:
        await runner.cleanup()


def kms(server: MotoServer) -> Any:
    return boto3.client("kms", endpoint_url=server.endpoint_url, region_name=server.region,
                        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)


def kms_key(server: MotoServer, state: str = "Enabled") -> str:
    """A new key's ARN (its region is the server's, us-east-1), in ``state``."""
    client = kms(server)
    meta = client.create_key(Description=f"drwatch test {state}")["KeyMetadata"]
    if state == "Disabled":
        client.disable_key(KeyId=meta["KeyId"])
    elif state == "PendingDeletion":
        client.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    return str(meta["Arn"])


def kms_dep(name: str, server: MotoServer, key_id: str, monkeypatch: pytest.MonkeyPatch,
            keys: tuple[str, str] | None = None) -> dict[str, Any]:
    ak, sk = keys or (server.access_key, server.secret_key)
    env = name.replace("-", "_")
    monkeypatch.setenv(f"DRW_KMS_AK_{env}", ak)
    monkeypatch.setenv(f"DRW_KMS_SK_{env}", sk)
    return {"kind": "kms_key", "name": name, "key_id": key_id, "endpoint_url": server.endpoint_url,
            "access_key_id_env": f"DRW_KMS_AK_{env}", "secret_access_key_env": f"DRW_KMS_SK_{env}"}


# --- pass ---------------------------------------------------------------------------------------------------


async def test_every_kind_reachable_and_away_from_production_passes(tmp_path: Path, moto: MotoServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS resolves, a port accepts, HTTPS answers 200 with a certificate from the configured CA, a registry's /v2/
    asking for a login (401) is alive, the KMS key is Enabled, the Terraform state's validator passed; each lives
    outside dc-a / eu-west-1: ok, every dependency up and none in production's failure domain, and the metrics
    carry each dependency's configured name and kind."""
    ca = ScratchCA(tmp_path / "pki", "deps")
    status = {"code": 200}
    registry_status = {"code": 401}
    async with tcp_listener() as port, https_server(ca, status) as url, https_server(ca, registry_status) as reg:
        deps = [
            {"kind": "dns", "name": "resolver", "host": "localhost", **AWAY},
            {"kind": "tcp", "name": "vault", "host": "127.0.0.1", "port": port, **AWAY},
            {"kind": "identity", "name": "idp", "url": url, "ca_file": str(ca.cert_path), **AWAY},
            {"kind": "registry", "name": "images", "url": reg.replace("/health", "/v2/"),
             "ca_file": str(ca.cert_path), **AWAY},
            kms_dep("backup-key", moto, kms_key(moto), monkeypatch),  # region from its ARN: us-east-1
            {"kind": "terraform_state", "name": "tfstate", "asset": "infra"},  # where: its location (dc-b)
        ]
        cfg = estate(tmp_path, deps, tf_state=tf_state())
        result = await run(tmp_path, cfg, first="infra")
    assert result.outcome == Outcome.OK, result.findings
    names = ["resolver", "vault", "idp", "images", "backup-key", "tfstate"]
    assert {n: result.figures[f"up.{n}"] for n in names} == dict.fromkeys(names, 1.0)
    assert {n: result.figures[f"in_failure_domain.{n}"] for n in names} == dict.fromkeys(names, 0.0)
    assert [f.code for f in result.findings] == ["dependencies_ok"]

    vcfg = parse(tmp_path, cfg).assets["data"].validators[0]
    samples = list(deps_validator.project([Latest("data", vcfg, result)]))
    ups = {labels[2:]: value for name, labels, value in samples if name == "drwatch_dependency_up"}
    assert ups == {("resolver", "dns"): 1.0, ("vault", "tcp"): 1.0, ("idp", "identity"): 1.0,
                   ("images", "registry"): 1.0, ("backup-key", "kms_key"): 1.0, ("tfstate", "terraform_state"): 1.0}
    assert all(labels[:2] == ("data", "recovery_dependencies") for _, labels, _ in samples)
    durations = [v for name, _, v in samples if name == "drwatch_dependency_probe_duration_seconds"]
    assert len(durations) == 6 and all(0 <= d < 5 for d in durations)


# --- each failure ---------------------------------------------------------------------------------------------


async def test_each_way_a_dependency_is_down_fails(tmp_path: Path, moto: MotoServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that does not resolve, a closed port, HTTP 503, a certificate no trusted CA issued (no ca_file: the
    system store), a server that accepts and never answers (the probe's timeout), a KMS key Disabled, one pending
    deletion and one that does not exist, a Terraform state that is invalid: failed, one critical finding each,
    up = 0, while the dependency that answers stays up."""
    ca = ScratchCA(tmp_path / "pki", "deps")
    status = {"code": 503}
    closed = free_port()  # the KMS endpoint (a VPC endpoint, a proxy) down: the message names it
    async with tcp_listener() as port, tcp_listener(answer=False) as silent, https_server(ca, status) as url:
        deps = [
            {"kind": "dns", "name": "resolver", "host": "drwatch-test.invalid", **AWAY},
            {"kind": "tcp", "name": "vault", "host": "127.0.0.1", "port": free_port(), **AWAY},
            {"kind": "tcp", "name": "ldap", "host": "127.0.0.1", "port": port, **AWAY},  # up
            {"kind": "https", "name": "idp", "url": url, "ca_file": str(ca.cert_path), **AWAY},
            {"kind": "registry", "name": "images", "url": url, **AWAY},
            {"kind": "https", "name": "stalled", "url": f"https://127.0.0.1:{silent}/", "timeout": "1s", **AWAY},
            kms_dep("off", moto, kms_key(moto, "Disabled"), monkeypatch),
            kms_dep("doomed", moto, kms_key(moto, "PendingDeletion"), monkeypatch),
            kms_dep("gone", moto, kms_key(moto).rsplit("/", 1)[0] + "/00000000-0000-4000-8000-000000000000",
                    monkeypatch),
            {**kms_dep("kms-down", moto, kms_key(moto), monkeypatch), "endpoint_url": f"http://127.0.0.1:{closed}"},
            {"kind": "terraform_state", "name": "tfstate", "asset": "infra"},
        ]
        started = time.monotonic()
        result = await run(tmp_path, estate(tmp_path, deps, tf_state=tf_state(version=3)), first="infra")
        elapsed = time.monotonic() - started
    assert result.outcome == Outcome.FAILED
    crit = "critical"
    assert by_subject(result) == {
        "resolver": (crit, "dependency_unreachable"), "vault": (crit, "dependency_unreachable"),
        "idp": (crit, "dependency_unhealthy"), "images": (crit, "dependency_tls_invalid"),
        "stalled": (crit, "dependency_unreachable"), "off": (crit, "dependency_key_unusable"),
        "doomed": (crit, "dependency_key_unusable"), "gone": (crit, "dependency_key_unusable"),
        "kms-down": (crit, "dependency_unreachable"),
        "tfstate": (crit, "dependency_unhealthy")}
    messages = {f.subject: f.message for f in result.findings}
    assert "HTTP 503" in messages["idp"] and "Disabled" in messages["off"] and "PendingDeletion" in messages["doomed"]
    assert "does not exist in region us-east-1" in messages["gone"] and "no answer within 1s" in messages["stalled"]
    assert messages["tfstate"].endswith("failed: state_version")
    assert f"EndpointConnectionError (Could not connect to the endpoint URL: \"http://127.0.0.1:{closed}/\")" \
        in messages["kms-down"], messages["kms-down"]
    assert result.figures["up.ldap"] == 1.0
    assert all(result.figures[f"up.{n}"] == 0.0 for n in ("resolver", "vault", "idp", "images", "stalled", "off"))
    assert elapsed < 8, "probes run in parallel: the 1 s timeout bounds the run, not the sum"


async def test_same_failure_domain_without_alternative(tmp_path: Path) -> None:
    """DNS in production's region with no alternative is dependency_in_failure_domain (a warning: ok); an identity
    provider in production's site has a declared alternative in another region (no finding); with
    domain_policy: failure the same estate fails. Reachability is judged apart: every probe here answers."""
    async with tcp_listener() as port:
        deps = [
            {"kind": "dns", "name": "dns-eu", "host": "localhost", "region": "eu-west-1"},
            {"kind": "tcp", "name": "idp-a", "host": "127.0.0.1", "port": port, "site": "dc-a",
             "provides": "identity"},
            {"kind": "tcp", "name": "idp-b", "host": "127.0.0.1", "port": port, "region": "us-east-2",
             "provides": "identity"},
        ]
        warned = await run(tmp_path, estate(tmp_path, deps))
        failed = await run(tmp_path, estate(tmp_path, deps, domain_policy="failure"))
    assert warned.outcome == Outcome.OK
    assert by_subject(warned) == {"dns-eu": ("warning", "dependency_in_failure_domain")}
    assert "region eu-west-1" in warned.findings[0].message
    assert [warned.figures[f"in_failure_domain.{n}"] for n in ("dns-eu", "idp-a", "idp-b")] == [1.0, 0.0, 0.0]
    assert failed.outcome == Outcome.FAILED
    assert by_subject(failed) == {"dns-eu": ("critical", "dependency_in_failure_domain")}


async def test_production_region_observed_from_the_bucket(tmp_path: Path, moto: MotoServer, locs: Any) -> None:
    """An S3 production location that declares no region: the bucket's observed region (us-west-2) is production's;
    a KMS key declared there with no alternative is in the failure domain."""
    from tests.support.s3helpers import bucket

    name = bucket(moto, "deps-prod", region="us-west-2")
    locs.s3("prod", moto, name, site="")
    del locs.data["prod"]["region"]
    cfg = estate(tmp_path, [{"kind": "dns", "name": "zone", "host": "localhost", "region": "us-west-2"}])
    cfg["locations"] = dict(locs.data)
    result = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK
    assert by_subject(result) == {"zone": ("warning", "dependency_in_failure_domain")}


# --- could not check --------------------------------------------------------------------------------------------


async def test_what_drwatch_cannot_check_is_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """drwatch's own credentials refused DescribeKey (a moto enforcing IAM, the user allowed s3:* only), a CA file
    that does not exist, a Terraform state whose validator has no result yet: error, dependency_not_checked for
    each, no up sample for them; the reachable one is still up."""
    with iam_moto_server() as (server, ak, sk):
        key = "arn:aws:kms:us-east-1:123456789012:key/0d7c9f7e-0000-4000-8000-00000000000a"  # IAM refuses first
        async with tcp_listener() as port:
            deps = [
                kms_dep("key", server, key, monkeypatch, keys=(ak, sk)),
                {"kind": "https", "name": "idp", "url": "https://localhost:1/", "ca_file": "missing-ca.pem", **AWAY},
                {"kind": "terraform_state", "name": "tfstate", "asset": "infra"},
                {"kind": "tcp", "name": "vault", "host": "127.0.0.1", "port": port, **AWAY},
            ]
            result = await run(tmp_path, estate(tmp_path, deps, tf_state=tf_state()))
    assert result.outcome == Outcome.ERROR, result.findings
    assert by_subject(result) == {n: ("warning", "dependency_not_checked") for n in ("key", "idp", "tfstate")}
    messages = {f.subject: f.message for f in result.findings}
    assert "kms:DescribeKey" in messages["key"] and "missing-ca.pem" in messages["idp"]
    assert "no result yet" in messages["tfstate"]
    assert not any(f"up.{n}" in result.figures for n in ("key", "idp", "tfstate"))
    assert result.figures["up.vault"] == 1.0


async def test_credentials_its_profile_cannot_get_are_error_not_a_key_down(tmp_path: Path, moto: MotoServer,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """drwatch's profile gets its credentials from a process that fails (as an expired SSO login or a broken
    credential_process do): botocore raises before any request reaches KMS, so the key was never asked: error,
    dependency_not_checked, no up sample; never failed dependency_unreachable (a page for a key that may be fine)."""
    config = tmp_path / "aws-config"
    config.write_text("[profile broken]\ncredential_process = /bin/false\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    deps: list[dict[str, Any]] = [{"kind": "kms_key", "name": "key", "key_id": kms_key(moto),
                                   "endpoint_url": moto.endpoint_url, "profile": "broken", "site": "dc-b"}]
    result = await run(tmp_path, estate(tmp_path, deps))
    assert result.outcome == Outcome.ERROR, result.findings
    assert by_subject(result) == {"key": ("warning", "dependency_not_checked")}
    assert "CredentialRetrievalError" in result.findings[0].message, result.findings
    assert "up.key" not in result.figures


async def test_drwatch_own_files_that_hang_are_error_not_a_dependency_down(tmp_path: Path, moto: MotoServer,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The CA file of an HTTPS probe and the key file of a KMS probe block when read (named pipes nobody writes, as
    a file on a hung network mount does) past the probe's 1 s timeout: the dependency was never asked, so each is
    dependency_not_checked (error), never dependency_unreachable (failed); the reachable one is still up."""
    ca_pipe, key_pipe = tmp_path / "ca.pem", tmp_path / "kms-key-id"
    for pipe in (ca_pipe, key_pipe):
        os.mkfifo(pipe)
    monkeypatch.setenv("DRW_DEP_SK", moto.secret_key)
    async with tcp_listener() as port:
        deps: list[dict[str, Any]] = [
            {"kind": "https", "name": "idp", "url": "https://localhost:1/", "ca_file": str(ca_pipe), "timeout": "1s",
             **AWAY},
            {"kind": "kms_key", "name": "key", "key_id": kms_key(moto), "endpoint_url": moto.endpoint_url,
             "access_key_id_file": str(key_pipe), "secret_access_key_env": "DRW_DEP_SK", "timeout": "1s",
             "site": "dc-b"},
            {"kind": "tcp", "name": "vault", "host": "127.0.0.1", "port": port, **AWAY},
        ]
        try:
            result = await run(tmp_path, estate(tmp_path, deps))
        finally:
            for pipe in (ca_pipe, key_pipe):  # the readers left blocked in their threads see end of file
                with contextlib.suppress(OSError):
                    os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
    assert result.outcome == Outcome.ERROR, result.findings
    assert by_subject(result) == {"idp": ("warning", "dependency_not_checked"),
                                  "key": ("warning", "dependency_not_checked")}
    assert all("the dependency was not asked" in f.message for f in result.findings if f.subject in ("idp", "key"))
    assert result.figures["up.vault"] == 1.0 and "up.idp" not in result.figures and "up.key" not in result.figures


async def test_failure_domain_unknown_is_error(tmp_path: Path) -> None:
    """Production's location declares no site or region (and is no S3 bucket to ask): the run cannot judge failure
    domains, so it is error with failure_domain_unknown, though the dependency is up."""
    cfg = estate(tmp_path, [{"kind": "dns", "name": "zone", "host": "localhost", "region": "eu-west-1"}])
    cfg["locations"]["prod"] = {"kind": "filesystem", "path": str(tmp_path / "prod")}
    result = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR
    assert [f.code for f in result.findings] == ["failure_domain_unknown"]
    assert result.figures["up.zone"] == 1.0


# --- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dep", "message"), [
    ({"kind": "tcp", "name": "x", "host": "h", "region": "r"}, "set both 'host' and 'port'"),
    ({"kind": "https", "name": "x", "url": "http://h/", "region": "r"}, "must be an https:// URL"),
    ({"kind": "registry", "name": "x", "url": "https://u:p@h/v2/", "region": "r"}, "must carry no credentials"),
    ({"kind": "tcp", "name": "x", "url": "https://h/", "region": "r"}, "takes 'host' and 'port'"),
    ({"kind": "dns", "name": "bad name", "host": "h", "region": "r"}, "metric label value"),
    ({"kind": "dns", "name": "x", "host": "192.0.2.53", "region": "r"}, "is an address: resolving it asks no DNS"),
    ({"kind": "dns", "name": "x", "host": "2001:db8::53", "region": "r"}, "is an address: resolving it asks no DNS"),
    ({"kind": "dns", "name": "x", "host": "h", "region": "r", "timeout": "10m"}, "at most 5m"),
    # Names the resolver cannot be asked for (the IDNA codec raises): the probe would stop the whole run.
    ({"kind": "dns", "name": "x", "host": "zone..example.com", "region": "r"}, "is not a host name"),
    ({"kind": "tcp", "name": "x", "host": "x" * 64 + ".example.com", "port": 1, "region": "r"},
     "is not a host name"),
    ({"kind": "https", "name": "x", "url": "https://idp..example.com/", "region": "r"}, "is not a host name"),
    ({"kind": "dns", "name": "x", "host": "h"}, "declare where it lives"),
    ({"kind": "terraform_state", "name": "x", "asset": "nope", "region": "r"}, "unknown asset 'nope'"),
    ({"kind": "tcp", "name": "x", "host": "h", "port": 1, "ca_file": "c", "region": "r"}, "'url' probe only"),
    ({"kind": "kms_key", "name": "x", "region": "eu-west-1",
      "key_id": "arn:aws:kms:us-east-1:123456789012:key/0d7c9f7e-0000-4000-8000-00000000000a"},
     "'region' eu-west-1 contradicts the key ARN's region us-east-1"),
])
def test_config_rejects(tmp_path: Path, dep: dict[str, Any], message: str) -> None:
    """Each mistake is refused at load with a message that says what to fix."""
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, estate(tmp_path, [dep]))
    assert message in str(err.value)


def test_names_are_unique(tmp_path: Path) -> None:
    dep = {"kind": "dns", "name": "x", "host": "h", "region": "r"}
    with pytest.raises(ConfigError, match="used twice"):
        parse(tmp_path, estate(tmp_path, [dep, dep]))


def test_a_terraform_state_dependency_runs_after_its_validator(tmp_path: Path) -> None:
    """The validator judges the terraform_state validator it reads (the daemon and `check` run that one first)."""
    cfg = parse(tmp_path, estate(tmp_path, [{"kind": "terraform_state", "name": "t", "asset": "infra"}],
                                 tf_state=tf_state()))
    vcfg = cfg.assets["data"].validators[0]
    assert vcfg.judges("data", cfg) == [("infra", "terraform_state")]
