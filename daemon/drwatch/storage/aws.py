"""What every AWS API client of drwatch shares: credentials from a config's ``*_env``/``*_file`` fields,
botocore errors mapped to honest "could not check" codes, and clients of other AWS services made on an S3
location's credentials and timeouts (:func:`location_client`). Used by S3 locations (``storage/s3.py``), the
``rds_snapshot`` validator and the validators that call STS, DynamoDB or KMS.

botocore is imported on first use here: it costs ~0.15 s of start-up that a ``check`` of filesystem assets
never needs (tests/test_startup.py keeps it out).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drwatch.core.errors import ConfigError, ValidatorError
from drwatch.core.secrets import read_secret

DENIED = frozenset({"AccessDenied", "AccessDeniedException", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "ExpiredToken", "ExpiredTokenException", "InvalidToken", "AllAccessDisabled", "AccountProblem",
                    "UnrecognizedClientException", "InvalidClientTokenId", "403"})
THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503",
                       "ServiceUnavailable", "InternalError", "500", "RequestTimeout"})


@dataclass(frozen=True)
class Credentials:
    access_key_id: str | None
    secret_access_key: str | None
    session_token: str | None
    profile: str | None

    @property
    def identity(self) -> str:
        """What makes two locations share credentials (never the secret itself)."""
        if self.access_key_id:
            return f"key:{self.access_key_id}"
        if self.profile:
            return f"profile:{self.profile}"
        return "default-chain"


def read_credentials(owner: str, cfg: Any, base_dir: Path) -> Credentials:
    """The keys a config names (``access_key_id_env``/``_file``, ``secret_access_key_*``, ``session_token_*``,
    ``profile``). A key that cannot be read (variable unset, file missing or empty) is a ValidatorError
    ``secret_unavailable`` (the check that needs it ends as ``error``), never an empty key. Blocking (files)."""
    def get(field_name: str) -> str | None:
        env = getattr(cfg, f"{field_name}_env")
        file = getattr(cfg, f"{field_name}_file")
        if env is None and file is None:
            return None
        try:
            return read_secret(f"{owner}{field_name}", env=env, file=file, base_dir=base_dir)
        except ConfigError as exc:
            raise ValidatorError("secret_unavailable", "; ".join(str(p) for p in exc.problems)) from None

    return Credentials(get("access_key_id"), get("secret_access_key"), get("session_token"),
                       getattr(cfg, "profile", None))


def http_errors() -> tuple[type[BaseException], ...]:
    """aiohttp errors botocore does not wrap (a body cut off by a dying server). aiohttp is imported by
    aioboto3 with the first client, so no such error can exist before; importing it here would cost every
    command (check-config included) ~0.3 s."""
    mod = sys.modules.get("aiohttp")
    return (mod.ClientError,) if mod is not None else ()


def api_errors() -> tuple[type[BaseException], ...]:
    """What a failing AWS call raises (botocore's roots, aiohttp's, OSError, TimeoutError)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError, OSError, TimeoutError, *http_errors())


def error_code(exc: Any) -> tuple[str, str]:
    """A botocore ClientError's (code, HTTP status as text); the code is the status when the body named none."""
    err = exc.response.get("Error", {})
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "") or "")
    return str(err.get("Code", "") or status), status


def aws_failure(exc: BaseException, where: str, other: str,
                kind: type[ValidatorError] = ValidatorError) -> ValidatorError | None:
    """A failed AWS call as "could not check": ``access_denied``, ``throttled`` (throttling or a 5xx),
    ``unreachable``, ``timeout``, ``no_credentials``, or ``other`` (an error answer of another kind). None for an
    exception that is none of botocore's, aiohttp's or the OS's (the caller decides). ``where`` names the
    endpoint in the message ("S3 location 'x'", "RDS API in eu-west-1"); ``kind`` is the class raised."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        if code in DENIED or status == "403":
            return kind("access_denied", f"{where} denied access ({code})")
        if code in THROTTLED or code.startswith("Throttl") or status.startswith("5"):
            return kind("throttled", f"{where} is throttling or failing ({code})")
        return kind(other, f"{where} answered {code}")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return kind("unreachable", f"{where} is unreachable")
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        return kind("timeout", f"{where} timed out")
    if isinstance(exc, NoCredentialsError):
        return kind("no_credentials", f"no credentials found for {where}")
    if isinstance(exc, (BotoCoreError, OSError, *http_errors())):
        # HTTPClientError: aiohttp errors botocore does not wrap, e.g. a body cut off by a dying server
        return kind("unreachable", f"{where}: {type(exc).__name__}")
    return None


_SHARED_SESSION: list[Any] = []  # the aioboto3 session every location with explicit keys uses


def session_for(creds: Credentials) -> Any:
    """The aioboto3 session a location's client is made from.

    A session parses botocore's service models once; a new session per location cost ~0.2-0.4 s of CPU
    on the event loop for every client. Locations with explicit keys (passed per client, never stored in
    the session, so its credential chain is never consulted) share one. A profile or the default chain is
    resolved by the session itself: such a location keeps a session of its own, as before.
    """
    import aioboto3  # heavy: imported on first use, not when loading a config

    if creds.access_key_id is None:
        from botocore.exceptions import ProfileNotFound

        try:
            return aioboto3.Session(profile_name=creds.profile)
        except ProfileNotFound:  # could not check (no credentials here), never a crash
            raise ValidatorError("no_credentials", f"AWS profile {creds.profile!r} is not configured on this host "
                                 "(AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE, ~/.aws/, or the unit's "
                                 "drwatch-aws-credentials credential)") from None
    if not _SHARED_SESSION:
        _SHARED_SESSION.append(aioboto3.Session())
    return _SHARED_SESSION[0]


def location_client(creds: Credentials, loc: Any, service: str, endpoint_url: str | None = None) -> Any:
    """A client of another AWS service (STS, DynamoDB...) made with an S3 location's credentials, region,
    timeouts and retries (``loc``: its config); ``endpoint_url`` overrides the location's. An async context
    manager; raises ValidatorError ``no_credentials`` for a profile this host lacks (:func:`session_for`)."""
    from botocore.config import Config as BotoConfig

    boto_cfg = BotoConfig(connect_timeout=loc.connect_timeout.total_seconds(),
                          read_timeout=loc.read_timeout.total_seconds(),
                          retries={"mode": loc.retry_mode, "max_attempts": loc.max_attempts})
    return session_for(creds).client(
        service, endpoint_url=endpoint_url or loc.endpoint_url, region_name=loc.region or "us-east-1",
        config=boto_cfg, aws_access_key_id=creds.access_key_id, aws_secret_access_key=creds.secret_access_key,
        aws_session_token=creds.session_token)
