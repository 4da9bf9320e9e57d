"""A report's own integrity: its digest and, with ``reports.signing_key_file``, an Ed25519 signature.

JSON: the document's ``integrity`` member holds ``{"algorithm": "sha256", "digest": …, "signature": …}``; the digest
is the SHA-256 of the document without ``integrity``, serialised canonically (keys sorted, no whitespace, UTF-8).
HTML: the file ends with one line ``<!-- drwatch-integrity {…} -->`` whose digest is the SHA-256 of every byte
before that line. A signature is ``{"algorithm": "ed25519", "key_id": …, "signature": <base64>}`` over
``drwatch-report-signature-v1\\n`` followed by the raw digest (the key id as in drwatch.formats.sealsign).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from drwatch.formats.sealsign import Signer, key_id, raw_public

_CONTEXT = b"drwatch-report-signature-v1\n"
MARK = "<!-- drwatch-integrity "
_EVIDENCE = re.compile(r'<script type="application/json" id="drwatch-evidence">(.*?)</script>', re.S)


def canonical(doc: dict[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "integrity"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _integrity(digest: bytes, signer: Signer | None) -> dict[str, Any]:
    signature = None if signer is None else {"algorithm": "ed25519", "key_id": signer.key_id,
                                             "signature": signer.sign(_CONTEXT + digest)}
    return {"algorithm": "sha256", "digest": digest.hex(), "signature": signature}


def seal_json(doc: dict[str, Any], signer: Signer | None) -> bytes:
    """The document as written: its canonical form with the ``integrity`` member added last (serialised once, by
    the json module's C encoder, which an indented dump would not use: 100k results took a minute that way)."""
    body = canonical(doc)
    integrity = json.dumps(_integrity(hashlib.sha256(body).digest(), signer), separators=(",", ":"))
    if body == b"{}":
        return b'{"integrity":' + integrity.encode() + b"}\n"
    return body[:-1] + b',"integrity":' + integrity.encode() + b"}\n"


def seal_html(page: str, signer: Signer | None) -> bytes:
    body = page.encode()
    if not body.endswith(b"\n"):
        body += b"\n"
    line = json.dumps(_integrity(hashlib.sha256(body).digest(), signer), separators=(",", ":"))
    return body + f"{MARK}{line} -->\n".encode()


def open_report(data: bytes, public_key: Any | None) -> tuple[dict[str, Any] | None, list[str], bool]:
    """The report's evidence block, what is wrong with the report itself, and whether it carries a signature
    that was checked. ``public_key``: verify the signature with it (None: the signature is not checked)."""
    problems: list[str] = []
    evidence: dict[str, Any] | None
    if data.lstrip().startswith(b"{"):
        try:
            doc = json.loads(data)
        except ValueError as exc:
            return None, [f"not a drwatch report: {exc}"], False
        integrity = doc.get("integrity") if isinstance(doc, dict) else None
        if not isinstance(integrity, dict):
            return None, ["not a drwatch report: no integrity member"], False
        digest = hashlib.sha256(canonical(doc)).digest()
        evidence = doc.get("evidence")
    else:
        text = data.decode("utf-8", "replace")
        at = text.rfind(MARK)
        if at < 0:
            return None, ["not a drwatch report: no drwatch-integrity line"], False
        try:
            integrity = json.loads(text[at + len(MARK):].strip().removesuffix("-->").strip())
        except ValueError:
            return None, ["the drwatch-integrity line is not readable"], False
        digest = hashlib.sha256(data[:len(text[:at].encode())]).digest()
        found = _EVIDENCE.search(text[:at])
        try:
            evidence = json.loads(found.group(1)) if found else None
        except ValueError:
            evidence = None
    if not isinstance(integrity, dict) or integrity.get("digest") != digest.hex():
        problems.append("the report was edited after it was written (its digest does not match its content)")
    checked = False
    signature = integrity.get("signature") if isinstance(integrity, dict) else None
    if public_key is not None:
        if not isinstance(signature, dict):
            problems.append("the report is not signed")
        else:
            checked = True
            why = _verify(public_key, signature, digest)
            if why:
                problems.append(why)
    if not isinstance(evidence, dict):
        problems.append("the report carries no evidence block (chain head and result digests)")
        evidence = None
    return evidence, problems, checked


def _verify(public_key: Any, signature: dict[str, Any], digest: bytes) -> str | None:
    from cryptography.exceptions import InvalidSignature

    if signature.get("algorithm") != "ed25519":
        return "the report's signature is not an Ed25519 signature"
    if signature.get("key_id") != key_id(raw_public(public_key)):
        return "the report was signed with another key"
    try:
        public_key.verify(base64.b64decode(str(signature.get("signature", "")), validate=True), _CONTEXT + digest)
    except (binascii.Error, ValueError, InvalidSignature):
        return "the report's signature does not match its content: the report was altered after it was signed"
    return None
