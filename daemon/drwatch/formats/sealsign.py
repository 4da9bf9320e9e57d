"""Signed seals: Ed25519 signatures a backup job adds with ``drwatch seal --sign KEYFILE``.

A signed seal ends with one more JSON line, after the entries::

    {"drwatch_signature": 1, "algorithm": "ed25519", "key_id": "3f0c…", "signature": "<base64>"}

The signature covers every byte of the seal before that line: it signs ``drwatch-seal-signature-v1\\n``
followed by the SHA-256 of those bytes (the seal is hashed as a stream, so a seal of millions of entries is
never held in memory). ``key_id`` is the first 16 hex digits of the SHA-256 of the raw public key: it names
the key, it proves nothing. Readers that do not verify signatures pass over the line.

An asset that sets ``seal_signature`` (:class:`SealSignatureConfig`) has its seal verified wherever it is
read (:func:`drwatch.formats.manifest.aread`, :mod:`drwatch.formats.seals`): a seal edited after signing, signed with
another
key, or (with ``required``) not signed at all is a bad seal (``failed``); a public key that cannot be read is
``error`` (could not check). The private key never leaves the backup job: drwatch reads it only in
``drwatch seal --sign`` and never names it in a message.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SIGNATURE_VERSION = 1
SIGNATURE_KEY = "drwatch_signature"
_CONTEXT = b"drwatch-seal-signature-v1\n"


class SealSignatureConfig(BaseModel):
    """``assets.<name>.seal_signature``: the public half of the backup job's seal-signing key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    public_key_path: str = Field(min_length=1)  # PEM (SubjectPublicKeyInfo) Ed25519 public key; not a secret
    required: bool = True  # an unsigned seal fails (false: unsigned is accepted, a bad signature still fails)


class SealKeyError(OSError):
    """The configured public key cannot be read or is not an Ed25519 public key: could not check (error)."""


class SigningKeyError(Exception):
    """The private key given to ``drwatch seal --sign`` cannot be used (the message never names it)."""


@dataclass(frozen=True)
class SealTrust:
    """What a reader needs to verify an asset's seal: the public key file and whether unsigned is refused."""

    public_key_path: Path
    required: bool = True


def signed_message(digest: bytes) -> bytes:
    """The bytes the Ed25519 signature covers, given the SHA-256 of the seal's bytes before the signature line."""
    return _CONTEXT + digest


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


def load_public_key(path: Path) -> Any:
    """The Ed25519 public key in ``path`` (blocking). Raises SealKeyError."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SealKeyError(exc.errno or errno.EIO,
                           f"seal public key {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise SealKeyError(errno.EINVAL, f"seal public key {path}: not a PEM Ed25519 public key "
                                         "(openssl pkey -in KEY -pubout)")
    return key


def raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    data: bytes = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return data


def parse_record(line: bytes | str) -> dict[str, Any] | None:
    """The signature record if ``line`` is one (a JSON object with ``drwatch_signature``), else None."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    if SIGNATURE_KEY not in text:
        return None
    try:
        rec = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return rec if isinstance(rec, dict) and SIGNATURE_KEY in rec else None


def verify(key: Any, record: dict[str, Any], digest: bytes) -> str | None:
    """None when ``record`` is a valid signature by ``key`` over the seal bytes hashed to ``digest``, else why not."""
    from cryptography.exceptions import InvalidSignature

    if record.get(SIGNATURE_KEY) != SIGNATURE_VERSION or record.get("algorithm") != "ed25519":
        return "the signature record is not a drwatch Ed25519 signature (version 1)"
    if record.get("key_id") != key_id(raw_public(key)):
        return "the seal was signed with another key than the configured public key"
    try:
        signature = base64.b64decode(str(record.get("signature", "")), validate=True)
        key.verify(signature, signed_message(digest))
    except (binascii.Error, ValueError, InvalidSignature):
        return "the signature does not match the seal's content: the seal was altered after it was signed"
    return None


class Signer:
    """An Ed25519 private key loaded for ``drwatch seal --sign``."""

    def __init__(self, key: Any) -> None:
        self._key = key
        self.key_id = key_id(raw_public(key.public_key()))

    @classmethod
    def load(cls, path: Path) -> Signer:
        """Read a PEM Ed25519 private key (unencrypted PKCS#8, as `openssl genpkey -algorithm ed25519` writes).
        Raises SigningKeyError without naming the key file."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"the signing key cannot be read: {exc.strerror or type(exc).__name__}") from None
        try:
            key = load_pem_private_key(data, password=None)
        except TypeError:
            raise SigningKeyError("the signing key is encrypted: give an unencrypted PEM key") from None
        except ValueError:
            key = None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError("the signing key is not a PEM Ed25519 private key "
                                  "(openssl genpkey -algorithm ed25519)")
        return cls(key)

    def sign(self, message: bytes) -> str:
        """The base64 Ed25519 signature of ``message`` (reports sign their own context string and digest)."""
        return base64.b64encode(self._key.sign(message)).decode()

    def public_key(self) -> Any:
        return self._key.public_key()

    def record(self, digest: bytes) -> str:
        """The signature line (with its newline) for a seal whose bytes so far hash to ``digest``."""
        signature = base64.b64encode(self._key.sign(signed_message(digest))).decode()
        return json.dumps({SIGNATURE_KEY: SIGNATURE_VERSION, "algorithm": "ed25519", "key_id": self.key_id,
                           "signature": signature}) + "\n"


def generate(private_path: Path, public_path: Path) -> str:
    """Write a new key pair (private 0600, refused if it exists; public PEM beside it). Returns the key id."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return key_id(raw_public(key.public_key()))
