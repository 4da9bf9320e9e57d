"""One probe per dependency kind, run from where drwatch runs. Each is bounded by the dependency's ``timeout`` and
never raises for the dependency it probes: it answers a :class:`Probe`.

- ``up``: the dependency answered as a restore needs it (a name resolved, a port accepted, an HTTPS status
  expected, a KMS key Enabled, a Terraform state whose validator passed);
- ``down`` (the run fails): a definite no from here: a name that does not resolve or no DNS answer in time, a
  connection refused or not accepted in time, a certificate that does not verify, an unexpected HTTP status, a
  KMS key disabled, pending deletion or gone, a Terraform state whose validator failed;
- ``unknown`` (the run is ``error`` unless something failed): drwatch's own means failed (its credentials missing
  or denied, its CA file unreadable, either not read within the timeout, KMS throttling, every name lookup thread
  still waiting for the resolver on other names: lookups.py), or the Terraform state's validator has no fresh
  verdict.
  For a KMS key only a connection that fails (refused, reset, timed out) is ``down``; any other botocore error
  happened before KMS was asked (no region, credentials its profile could not get) and is ``unknown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from drwatch.core.durations import format_duration
from drwatch.core.errors import ValidatorError
from drwatch.core.model import Outcome
from drwatch.storage.aws import DENIED, THROTTLED, error_code, http_errors, read_credentials, session_for
from drwatch.validators.dependencies.config import (
    DnsDependency,
    EndpointDependency,
    KmsKeyDependency,
    TerraformStateDependency,
)
from drwatch.validators.dependencies.lookups import LOOKUPS, LookupsBusy

if TYPE_CHECKING:
    from drwatch.validators.base import RunContext

UNREACHABLE = "dependency_unreachable"
NOT_CHECKED = "dependency_not_checked"


@dataclass(frozen=True)
class Probe:
    state: Literal["up", "down", "unknown"]
    code: str  # "" when up
    message: str


def up(message: str) -> Probe:
    return Probe("up", "", message)


def down(code: str, message: str) -> Probe:
    return Probe("down", code, message)


def unknown(message: str) -> Probe:
    return Probe("unknown", NOT_CHECKED, message)


@dataclass
class _Asking:
    """Whether the probe has got past drwatch's own means (its CA file, credentials, AWS SDK) to asking the
    dependency: a timeout before that is drwatch's, never the dependency's."""

    started: bool = False


async def probe(dep: Any, ctx: RunContext) -> Probe:
    """The probe of one dependency, within its timeout (a hung resolver thread is left behind, never waited on)."""
    limit = dep.timeout.total_seconds()
    asking = _Asking(started=isinstance(dep, DnsDependency | TerraformStateDependency)
                     or (isinstance(dep, EndpointDependency) and dep.url is None))
    try:
        async with asyncio.timeout(limit):
            if isinstance(dep, DnsDependency):
                return await _dns(dep)
            if isinstance(dep, EndpointDependency):
                return await (_https(dep, ctx, limit, asking) if dep.url is not None else _tcp(dep))
            if isinstance(dep, KmsKeyDependency):
                return await _kms(dep, ctx, limit, asking)
            if isinstance(dep, TerraformStateDependency):
                return _terraform_state(dep, ctx)
    except TimeoutError:
        if not asking.started:
            return unknown(f"drwatch's own means (its CA file, credentials or AWS SDK) took more than the "
                           f"probe's {format_duration(limit)}: the dependency was not asked")
        return down(UNREACHABLE, f"no answer within {format_duration(limit)}")
    raise TypeError(f"no probe for {type(dep).__name__}")


async def _dns(dep: DnsDependency) -> Probe:
    try:
        infos = await LOOKUPS.getaddrinfo(dep.host, None, type=socket.SOCK_STREAM)
    except LookupsBusy as exc:
        return unknown(f"{dep.host} not looked up: {exc}")
    except socket.gaierror as exc:
        return down(UNREACHABLE, f"{dep.host} does not resolve ({exc.strerror or exc})")
    addresses = sorted({str(info[4][0]) for info in infos})
    shown = ", ".join(addresses[:3]) + (f" and {len(addresses) - 3} more" if len(addresses) > 3 else "")
    return up(f"{dep.host} resolves to {shown}")


async def _tcp(dep: EndpointDependency) -> Probe:
    assert dep.host is not None and dep.port is not None
    where = f"{dep.host}:{dep.port}"
    try:
        infos = await LOOKUPS.getaddrinfo(dep.host, dep.port, type=socket.SOCK_STREAM)
    except LookupsBusy as exc:
        return unknown(f"{dep.host} not looked up: {exc}")
    except socket.gaierror as exc:
        return down(UNREACHABLE, f"{dep.host} does not resolve ({exc.strerror or exc})")
    refused: OSError | None = None
    for *_, address in infos:  # the resolved addresses in the resolver's order (IP literals: no lookup again)
        try:
            _reader, writer = await asyncio.open_connection(address[0], address[1])
            break
        except OSError as exc:
            refused = exc
    else:
        why = (refused.strerror or refused) if refused is not None else "no address"
        return down(UNREACHABLE, f"{where} refused the connection ({why})")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return up(f"{where} accepted a connection")


def _tls_context(cafile: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)  # reads the file: called in a thread


async def _https(dep: EndpointDependency, ctx: RunContext, limit: float, asking: _Asking) -> Probe:
    import aiohttp  # imported on first use (start-up of `check`)

    assert dep.url is not None
    cafile = str(ctx.config.resolve_path(dep.ca_file)) if dep.ca_file is not None else None
    try:
        tls = await asyncio.to_thread(_tls_context, cafile)
    except (OSError, ssl.SSLError) as exc:
        return unknown(f"the CA file {cafile} cannot be used ({getattr(exc, 'strerror', None) or exc})")
    asking.started = True
    try:
        # The URL's name is looked up in the probes' own threads (lookups.py), not the loop's default executor.
        resolver = aiohttp.ThreadedResolver(loop=cast(asyncio.AbstractEventLoop, LOOKUPS))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit),
                                         connector=aiohttp.TCPConnector(resolver=resolver)) as http, \
                http.get(dep.url, ssl=tls, allow_redirects=False) as resp:
            status = resp.status
    except aiohttp.ClientSSLError as exc:
        return down("dependency_tls_invalid", f"{dep.url}: TLS verification failed ({_why(exc)})")
    except (aiohttp.ClientError, OSError) as exc:
        if isinstance(getattr(exc, "os_error", exc), LookupsBusy):
            return unknown(f"{dep.url} not looked up: {getattr(exc, 'os_error', exc)}")
        return down(UNREACHABLE, f"{dep.url}: {_why(exc)}")
    if not dep.accepts(status):
        expected = ", ".join(map(str, dep.expect_status)) if dep.expect_status else "2xx/3xx"
        return down("dependency_unhealthy", f"{dep.url} answered HTTP {status} (expected {expected})")
    return up(f"{dep.url} answered HTTP {status}")


def _why(exc: BaseException) -> str:
    inner = getattr(exc, "os_error", None) or getattr(exc, "certificate_error", None)
    text = str(getattr(inner, "strerror", None) or getattr(inner, "reason", None) or inner or exc)
    return text[:200] or type(exc).__name__


def _warm_kms(session: Any) -> None:
    """Parse KMS's service model and endpoint rules into the session's loader cache (in a thread: ~0.1-0.3 s of
    CPU the first time, which would otherwise block the event loop when the client is made)."""
    loader = session._session.get_component("data_loader")
    loader.load_service_model("kms", "service-2")
    loader.load_service_model("kms", "endpoint-rule-set-1")
    loader.load_data("partitions")


async def _kms(dep: KmsKeyDependency, ctx: RunContext, limit: float, asking: _Asking) -> Probe:
    await asyncio.to_thread(importlib.import_module, "aioboto3")  # ~0.6 s the first time: off the event loop
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    try:
        keys = await asyncio.to_thread(read_credentials, f"dependencies.{dep.name}.", dep, ctx.config.base_dir)
        session = session_for(keys)  # explicit keys share one session: service models parsed once per process
        await asyncio.to_thread(_warm_kms, session)
    except ValidatorError as exc:
        return unknown(exc.message)
    asking.started = True
    boto_cfg = BotoConfig(connect_timeout=limit, read_timeout=limit, retries={"mode": "standard", "max_attempts": 2})
    try:
        async with session.client("kms", region_name=dep.api_region, endpoint_url=dep.endpoint_url,
                                  config=boto_cfg, aws_access_key_id=keys.access_key_id,
                                  aws_secret_access_key=keys.secret_access_key,
                                  aws_session_token=keys.session_token) as kms:
            meta = (await kms.describe_key(KeyId=dep.key_id))["KeyMetadata"]
    except ClientError as exc:
        code, status = error_code(exc)
        if code == "NotFoundException":
            return down("dependency_key_unusable", f"KMS key {dep.key_id} does not exist in region {dep.api_region}")
        if code in DENIED or status == "403":
            return unknown(f"drwatch's credentials were refused DescribeKey on {dep.key_id} ({code}): grant "
                           "kms:DescribeKey to check it")
        if code in THROTTLED or code.startswith("Throttl"):
            return unknown(f"KMS throttled or failed DescribeKey on {dep.key_id} ({code})")
        return unknown(f"KMS answered {code} for {dep.key_id}")
    except NoCredentialsError:
        return unknown("no AWS credentials found for DescribeKey (set a profile or keys on the dependency)")
    except (BotoConnectionError, HTTPClientError, OSError, *http_errors()) as exc:  # unreachable, connect/read timeout
        detail = str(exc)[:200]  # botocore names the endpoint URL ("Could not connect to the endpoint URL: ...")
        return down(UNREACHABLE, f"KMS DescribeKey on {dep.key_id}: {type(exc).__name__}"
                    + (f" ({detail})" if detail else ""))
    except BotoCoreError as exc:  # drwatch's own means: no region, credentials its profile could not get (SSO, process)
        if type(exc).__name__ == "NoRegionError":
            return unknown("no region for the KMS API: set 'region' or use the key's ARN")
        return unknown(f"DescribeKey on {dep.key_id} could not be made: {type(exc).__name__} ({str(exc)[:200]})")
    state = str(meta.get("KeyState", ""))
    if state != "Enabled" or meta.get("Enabled") is False:
        when = meta.get("DeletionDate")
        extra = f", deletion on {when:%Y-%m-%d}" if when is not None and hasattr(when, "strftime") else ""
        return down("dependency_key_unusable", f"KMS key {dep.key_id} is {state or 'not enabled'}{extra}: nothing "
                    "encrypted with it can be restored")
    return up(f"KMS key {dep.key_id} is Enabled")


def _terraform_state(dep: TerraformStateDependency, ctx: RunContext) -> Probe:
    what = f"assets.{dep.asset} validator {dep.validator!r}"
    target = ctx.config.assets.get(dep.asset)
    vcfg = next((v for v in target.validators if v.label == dep.validator), None) if target is not None else None
    if vcfg is None or ctx.results is None:
        return unknown(f"{what} is not configured")
    res = ctx.results().last_result(dep.asset, dep.validator)
    if res is None:
        return unknown(f"{what} has no result yet")
    age = ctx.clock() - res.finished_at
    if age > vcfg.effective_max_age(ctx.config):
        return unknown(f"the latest result of {what} is {format_duration(age)} old (stale)")
    if res.outcome == Outcome.OK:
        return up(f"{what} passed {format_duration(max(0.0, age))} ago")
    codes = sorted({f.code for f in res.findings if f.severity == "critical"}) or [res.outcome.value]
    if res.outcome == Outcome.FAILED:
        return down("dependency_unhealthy", f"{what} failed: {', '.join(codes[:5])}")
    return unknown(f"{what} could not check the state ({res.outcome.value})")
