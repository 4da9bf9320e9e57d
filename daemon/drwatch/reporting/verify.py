"""``drwatch verify-report``: a report checked against the store it was built from.

The store's chain must be intact (drwatch.store.chain), must still hold the chain head the report carries with
the same digest, and must hold every result the report lists with the digest the report recorded. A result
pruned since (history retention) is reported as pruned: proven by its tombstone, its content no longer shown.
The HTML report carries each result's digest shortened to 64 bits (16 hex digits), the JSON report whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drwatch.store.chain import GENESIS, ChainCheck

MIN_HEX = 16  # a report's result digest may be shortened (the HTML report's are), never below 64 bits


@dataclass(frozen=True)
class Finding:
    kind: str  # report | edited | deleted | reordered | head | unchained | pruned
    detail: str

    @property
    def tampered(self) -> bool:
        return self.kind != "pruned"


def compare(evidence: dict[str, Any], chain: ChainCheck) -> list[Finding]:
    out = [Finding(p.kind, f"store result id {p.id}{f' (run {p.run_id})' if p.run_id else ''}: {p.detail}")
           for p in chain.problems]
    head = evidence.get("chain_head") or {}
    head_id, head_digest = int(head.get("id", 0)), str(head.get("digest", GENESIS))
    if head_id:
        link = chain.links.get(head_id)
        if link is None:
            out.append(Finding("deleted", f"the report's chain head, result id {head_id}, is no longer in the store"))
        elif link[0] != head_digest:
            out.append(Finding("edited", f"the store's result id {head_id} is not the one the report's chain head "
                                         "names: the chain was rewritten since the report"))
    listed = evidence.get("results") or []
    if listed and not _any_in_store(listed, head_digest, chain):
        out.insert(0, Finding("unmatched", f"none of the report's {len(listed)} results (nor its chain head) is in "
                                           "this store's chain: the report was made from another store (check "
                                           "--config and its store), or this store's chain was rewritten from "
                                           "its first result"))
    for rid, digest in listed:
        link = chain.links.get(int(rid))
        if link is None:
            out.append(Finding("deleted", f"result id {rid} of the report is no longer in the store"))
        elif len(str(digest)) < MIN_HEX or not link[0].startswith(str(digest)):
            out.append(Finding("edited", f"result id {rid} (run {link[1]}) differs from the one in the report"))
        elif link[2]:
            out.append(Finding("pruned", f"result id {rid} (run {link[1]}) was pruned since (its link remains)"))
    return out


def _any_in_store(listed: list[Any], head_digest: str, chain: ChainCheck) -> bool:
    """Whether any digest the report carries (a result's, maybe shortened, or its head's) is one of the store's."""
    width = min((len(str(d)) for _, d in listed), default=64)
    if width < MIN_HEX:
        return True  # not comparable: the per-result findings say what is wrong
    stored = {link[0][:width] for link in chain.links.values()}
    return head_digest[:width] in stored or any(str(d)[:width] in stored for _, d in listed)
