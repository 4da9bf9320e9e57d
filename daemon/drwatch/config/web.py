"""The web configuration file (``http.web_config_file``): TLS and basic authentication for the HTTP endpoints.

The file has the format of the Prometheus exporter-toolkit's web configuration (``--web.config.file``), so
one file can serve every exporter on a host::

    tls_server_config: {cert_file, key_file, client_auth_type, client_ca_file, client_allowed_sans,
                        min_version, max_version, cipher_suites, prefer_server_cipher_suites}
    http_server_config: {http2, headers}
    basic_auth_users: {USER: BCRYPT_HASH}
    rate_limit: {interval, burst}

Relative file names resolve against the web config file's directory. Differences from the toolkit, each a clear
error rather than a silent change: inline ``cert``/``key``/``client_ca`` (use the ``*_file`` forms: drwatch keeps
secrets in files), ``curve_preferences``, and the client-auth types that do not verify the certificate
(``RequestClientCert``, ``RequireAnyClientCert``) are not supported; ``http2`` is accepted but drwatch serves
HTTP/1.1. This module loads and checks the file (a bad one fails like the main configuration); the HTTP server
applies it with :class:`drwatch.http.webconfig.WebGuard`.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from drwatch.config.schema import reference_data
from drwatch.core.durations import Duration
from drwatch.core.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from drwatch.config.schema import Config

# Go cipher-suite names (crypto/tls, the secure ones tls.CipherSuites() lists for TLS 1.0-1.2) -> OpenSSL.
# TLS 1.3 suites are not configurable, in Go as in OpenSSL's cipher list.
CIPHER_SUITES: dict[str, str] = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_UNVERIFIED_AUTH = ("RequestClientCert", "RequireAnyClientCert")
# The response headers the toolkit lets an operator set, with the values it accepts (None: any).
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None, "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": None, "Content-Security-Policy": None,
}
_BCRYPT = re.compile(r"^\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Model):
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: str = "NoClientCert"
    client_ca_file: str = ""
    client_allowed_sans: list[str] = Field(default_factory=list)
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"
    cipher_suites: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    # Recognised so that the message can say why they are refused (see the module docstring).
    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None
    curve_preferences: list[str] | None = None

    @field_validator("cert", "key", "client_ca")
    @classmethod
    def _no_inline(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("inline PEM is not supported by drwatch: put it in a file and use the *_file key")
        return value

    @field_validator("curve_preferences")
    @classmethod
    def _no_curves(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            raise ValueError("not supported by drwatch (Python's ssl module cannot set a curve preference list); "
                             "remove it to use OpenSSL's defaults")
        return value

    @field_validator("client_auth_type")
    @classmethod
    def _auth_type(cls, value: str) -> str:
        if value in _UNVERIFIED_AUTH:
            raise ValueError(f"{value} accepts certificates without verifying them and is not supported: use "
                             "RequireAndVerifyClientCert (or VerifyClientCertIfGiven)")
        if value not in _CLIENT_AUTH:
            raise ValueError(f"unknown client_auth_type {value!r} (known: {', '.join(_CLIENT_AUTH)})")
        return value

    @field_validator("cipher_suites")
    @classmethod
    def _ciphers(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in CIPHER_SUITES]
        if unknown:
            raise ValueError(f"unknown or insecure cipher suite(s) {', '.join(unknown)} (known: "
                             f"{', '.join(CIPHER_SUITES)})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        if not self.cert_file or not self.key_file:
            raise ValueError("tls_server_config needs both cert_file and key_file")
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version {self.max_version}")
        verifies = _CLIENT_AUTH[self.client_auth_type] != ssl.CERT_NONE
        if verifies and not self.client_ca_file:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        if self.client_ca_file and not verifies:
            raise ValueError("client_ca_file is set but client_auth_type is NoClientCert: set client_auth_type "
                             "RequireAndVerifyClientCert")
        if self.client_allowed_sans and self.client_auth_type != "RequireAndVerifyClientCert":
            raise ValueError("client_allowed_sans needs client_auth_type RequireAndVerifyClientCert")
        return self


class HTTPServerConfig(_Model):
    http2: bool = True  # accepted for compatibility; drwatch (aiohttp) serves HTTP/1.1
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name not in _HEADERS:
                raise ValueError(f"HTTP header {name!r} cannot be configured (allowed: {', '.join(_HEADERS)})")
            allowed = _HEADERS[name]
            if allowed is not None and text not in allowed:
                raise ValueError(f"invalid value for {name}: expected one of {', '.join(allowed)}")
        return value


class RateLimitConfig(_Model):
    interval: Duration = timedelta(0)  # between two requests on average; 0s disables
    burst: int = Field(default=0, ge=0, strict=True)

    @model_validator(mode="after")
    def _burst(self) -> RateLimitConfig:
        if self.interval > timedelta(0) and self.burst < 1:
            raise ValueError("burst must be at least 1 when interval is set (0 would refuse every request)")
        return self


class WebConfigModel(_Model):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = Field(default_factory=HTTPServerConfig)
    basic_auth_users: dict[str, str] = Field(default_factory=dict)
    rate_limit: RateLimitConfig | None = None

    @field_validator("basic_auth_users")
    @classmethod
    def _hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for user, hashed in value.items():
            match = _BCRYPT.match(hashed) if isinstance(hashed, str) else None
            if match is None or not 4 <= int(match.group(1)) <= 31:
                # Never repeat the value: it may be a plain password pasted by mistake.
                raise ValueError(f"user {user!r}: not a bcrypt hash (e.g. from `htpasswd -nBC 10 \"\" | tr -d "
                                 "':\\n'`); plain passwords are not accepted")
        return value


@dataclass(frozen=True)
class WebConfig:
    """A loaded web configuration: the model, its file and (with TLS) a ready server context."""

    source: Path
    model: WebConfigModel
    ssl_context: ssl.SSLContext | None

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    def secret_files(self) -> list[tuple[str, Path]]:
        """Files whose contents must not be readable by others: the web config itself, the TLS key."""
        out = [("http.web_config_file", self.source)]
        tls = self.model.tls_server_config
        if tls is not None:
            out.append(("http.web_config_file: tls_server_config.key_file", _resolve(self.source, tls.key_file)))
        return out


def _resolve(source: Path, name: str) -> Path:
    path = Path(os.path.expanduser(name))
    return path if path.is_absolute() else source.parent / path


class _EncryptedKeyError(Exception):
    pass


def _no_passphrase() -> bytes:
    raise _EncryptedKeyError  # never let OpenSSL prompt on a terminal for a key passphrase


def build_ssl_context(tls: TLSServerConfig, source: Path) -> ssl.SSLContext:
    """The server context for ``tls``; raises ConfigError naming the field whose file is unusable."""
    def fail(field: str, message: str) -> ConfigError:
        return ConfigError(str(source), [ConfigProblem(f"tls_server_config.{field}", message)])

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    cert, key = _resolve(source, tls.cert_file), _resolve(source, tls.key_file)
    for field, path in (("cert_file", cert), ("key_file", key)):
        if not path.is_file():
            raise fail(field, f"{path}: no such file")
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except _EncryptedKeyError:
        raise fail("key_file", f"{key}: the private key is encrypted; drwatch needs an unencrypted key "
                               "(readable by drwatch only)") from None
    except ssl.SSLError as exc:
        raise fail("cert_file", f"{cert} and {key} are not a matching PEM certificate and private key "
                                f"({exc.reason or 'unreadable'})") from None
    except OSError as exc:
        raise fail("key_file", f"cannot read {cert} / {key}: {exc.strerror or exc}") from None
    if tls.client_ca_file:
        ca = _resolve(source, tls.client_ca_file)
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or "no PEM certificate"
            raise fail("client_ca_file", f"{ca}: cannot load CA certificates ({reason})") from None
        if not ctx.get_ca_certs():
            raise fail("client_ca_file", f"{ca}: holds no CA certificate")
    ctx.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    if tls.cipher_suites:
        ctx.set_ciphers(":".join(CIPHER_SUITES[c] for c in tls.cipher_suites))
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def load_web_config(path: Path) -> WebConfig:
    """Read, validate and build the web configuration (blocking: call it from a thread on the loop).

    Raises ConfigError whose problems carry field paths inside the web config file."""
    from drwatch.config.problems import problems_from_validation
    from drwatch.config.yamlload import UniqueKeyLoader

    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [ConfigProblem("", f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [ConfigProblem("", "not UTF-8 text")]) from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # safe; no duplicate keys, alias bombs or deep nesting
    except RecursionError:
        raise ConfigError(source, [ConfigProblem("", "malformed YAML: nested too deeply")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(source, [ConfigProblem(where, f"malformed YAML: {getattr(exc, 'problem', None) or exc}")]) \
            from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigProblem("", "the top level must be a mapping of keys")])
    try:
        model = WebConfigModel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, problems_from_validation(exc, data)) from None
    if model.basic_auth_users:
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            raise ConfigError(source, [ConfigProblem("basic_auth_users", "needs the bcrypt package "
                                                                         "(pip install bcrypt)")]) from None
    ctx = build_ssl_context(model.tls_server_config, path) if model.tls_server_config is not None else None
    return WebConfig(path.resolve(), model, ctx)


def describe(config: WebConfig | None) -> dict[str, Any]:
    """What the endpoints require, for logs (no secrets: user names and settings only)."""
    if config is None:
        return {"tls": False, "basic_auth": False}
    tls = config.model.tls_server_config
    return {"tls": tls is not None, "client_auth": tls.client_auth_type if tls else None,
            "basic_auth": bool(config.model.basic_auth_users)}


def for_config(cfg: Config) -> WebConfig | None:
    """The web configuration ``cfg`` names (None without one). Blocking: reads files.

    Raises ConfigError whose paths start at ``http.web_config_file``, like the main file's problems."""
    name = cfg.http.web_config_file
    if name is None:
        return None
    try:
        return load_web_config(cfg.resolve_path(name))
    except ConfigError as exc:
        raise ConfigError(cfg.source, [
            ConfigProblem(f"http.web_config_file: {name}" + (f": {p.path}" if p.path else ""), p.message)
            for p in exc.problems]) from None


def exposed_files(cfg: Config, web_config: WebConfig | None) -> list[str]:
    """World-readable secret files among the config's ``*_file`` secrets, the web config and its TLS key."""
    from drwatch.core.secrets import exposed_files as exposed

    return exposed(reference_data(cfg), cfg.base_dir, web_config.secret_files() if web_config else ())
