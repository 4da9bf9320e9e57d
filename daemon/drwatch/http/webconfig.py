"""TLS and basic authentication applied to the HTTP endpoints, from the web configuration file
(``http.web_config_file``, loaded and checked by :mod:`drwatch.config.web`).

Like the Prometheus exporter-toolkit, authentication guards *every* path (``/-/healthy`` and ``/-/ready``
included). ``client_allowed_sans`` is enforced per request (403) rather than during the handshake.

The file is read at start and on every reload (SIGHUP, ``POST /-/reload``): a new certificate, key, CA,
user list or header set applies to new connections at once (:class:`WebGuard` swaps the TLS context
under the listening socket). A file that fails to load is rejected with the reload and the running one
stays. Switching TLS on or off needs a restart.

bcrypt is slow by design: a password is checked in a worker thread, one check at a time, and successful
(user, hash, password) triples are cached (keyed by an HMAC of the password, never the password itself).
An unknown user is checked against a decoy hash so that timing does not reveal which users exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from drwatch.config.web import WebConfig, WebConfigModel

if TYPE_CHECKING:  # aiohttp is imported only by the server, not by `check-config`
    from aiohttp import web

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CACHE_SIZE = 1024


class _RotatingContext(ssl.SSLContext):
    """The context handed to the listening socket: every new connection is wrapped by the *current*
    context, so a reload swaps certificate, key, CA and protocol settings without rebinding the port."""

    current: ssl.SSLContext

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return self.current.wrap_bio(incoming, outgoing, server_side=server_side, server_hostname=server_hostname,
                                     session=session)


class _TokenBucket:
    def __init__(self, interval: float, burst: int) -> None:
        self.rate, self.burst = 1.0 / interval, float(burst)
        self.tokens, self.at = float(burst), time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _bcrypt_check(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:  # malformed hash, or a password over bcrypt's 72 bytes
        return False


@functools.cache
def _decoy_hash() -> bytes:
    """A hash to check unknown users against (same cost as a typical configured one), made once."""
    import bcrypt

    return bytes(bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(10)))


class WebGuard:
    """Applies the current :class:`WebConfig` to the HTTP server: TLS context and a request middleware
    (rate limit, client certificate SANs, basic authentication, response headers)."""

    def __init__(self, config: WebConfig | None) -> None:
        self.config = config
        self._ssl: _RotatingContext | None = None
        if config is not None and config.ssl_context is not None:
            self._ssl = _RotatingContext(ssl.PROTOCOL_TLS_SERVER)
            self._ssl.current = config.ssl_context
        self._limiter = self._make_limiter(config)
        self._hmac_key = os.urandom(32)
        self._ok: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()
        self._bcrypt_lock = asyncio.Lock()

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return self._ssl

    @property
    def scheme(self) -> str:
        return "https" if self._ssl is not None else "http"

    @staticmethod
    def _make_limiter(config: WebConfig | None) -> _TokenBucket | None:
        rl = config.model.rate_limit if config is not None else None
        if rl is None or rl.interval <= timedelta(0):
            return None
        return _TokenBucket(rl.interval.total_seconds(), rl.burst)

    def apply(self, config: WebConfig | None) -> list[str]:
        """Switch to a new configuration; returns what could not change without a restart."""
        problems = []
        new_tls = config is not None and config.ssl_context is not None
        if new_tls != (self._ssl is not None):
            problems.append("switching TLS on or off takes effect after a restart; TLS stays "
                            + ("on with the previous certificate" if self._ssl is not None else "off"))
        if self._ssl is not None and config is not None and config.ssl_context is not None:
            self._ssl.current = config.ssl_context
        if new_tls or self._ssl is None:
            self.config = config
        elif config is not None:  # TLS stays on with the old context; take everything else from the new file
            self.config = WebConfig(config.source, config.model.model_copy(update={
                "tls_server_config": self.config.model.tls_server_config if self.config else None}),
                self._ssl.current)
        self._limiter = self._make_limiter(self.config)
        self._ok = OrderedDict()  # replaced, not cleared: the HTTP thread may be using the old one
        return problems

    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The middleware body (``httpserver`` registers it): every path, every method."""
        from aiohttp import web

        config = self.config
        if config is None:
            return await handler(request)
        model = config.model
        headers = model.http_server_config.headers
        response: web.StreamResponse
        if self._limiter is not None and not self._limiter.allow():
            response = web.Response(status=429, text="Too Many Requests\n")
        elif not self._san_allowed(model, request):
            response = web.Response(status=403, text="Forbidden: client certificate not allowed\n")
        elif model.basic_auth_users and not await self._authorised(model.basic_auth_users, request):
            response = web.Response(status=401, text="Unauthorized\n", headers={"WWW-Authenticate": "Basic"})
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                exc.headers.update(headers)
                raise
        response.headers.update(headers)
        return response

    @staticmethod
    def _san_allowed(model: WebConfigModel, request: web.Request) -> bool:
        tls = model.tls_server_config
        if tls is None or not tls.client_allowed_sans:
            return True
        transport = request.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if not cert:
            return False
        sans = {str(value) for _kind, value in cert.get("subjectAltName", ())}
        return any(allowed in sans for allowed in tls.client_allowed_sans)

    async def _authorised(self, users: dict[str, str], request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        hashed = users.get(user)
        key = (user, hashed or "", hmac.new(self._hmac_key, password.encode(), hashlib.sha256).digest())
        cache = self._ok  # apply() (on the daemon's loop) replaces it
        if hashed is not None and key in cache:
            cache.move_to_end(key)
            return True
        async with self._bcrypt_lock:  # bcrypt is CPU-bound by design: one check at a time, off the loop
            target = hashed.encode() if hashed is not None else await asyncio.to_thread(_decoy_hash)
            ok = await asyncio.to_thread(_bcrypt_check, password.encode(), target)
        if ok and hashed is not None:
            cache = self._ok
            cache[key] = None
            while len(cache) > _CACHE_SIZE:
                cache.popitem(last=False)
            return True
        return False
