"""Tamper evidence for stored results: a hash chain in the order results are stored.

Every result row carries ``prev_digest`` (the digest of the result stored before it) and ``digest``::

    digest = sha256("drwatch-result-chain-v1\\n" + JSON [prev_digest, run_id, asset, validator, kind, outcome,
                    started_at, finished_at, recovery_point, figures, findings, copies, config_hash])

over the values exactly as stored (figures, findings and copies are the stored JSON text; times are floats).
The one-row table ``result_chain`` holds the head: the id and digest of the newest result. A result removed by
``prune`` (history retention) leaves a tombstone (``result_tombstones``: id, run id, finish time and both
digests), so the chain still links across it; a row deleted any other way breaks the link of the row after it.

What the chain proves: a row edited in place no longer hashes to its digest; a deleted row, or rows swapped,
leave a ``prev_digest`` that does not name the link before it; deleting the newest rows leaves the head naming
a result that is gone. Someone with write access to the database can rewrite the whole chain after an edit,
which is why a report carries the head it was built on (and may be signed): ``drwatch verify-report`` checks
that the store still holds that head and every result the report lists, with the digests the report recorded.

Schema 5 added the chain: results stored before it were chained on migration, in id order, from the genesis
digest (64 zeros); results pruned before it are outside the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
_CONTEXT = b"drwatch-result-chain-v1\n"
# The stored columns a digest covers, in this order, after the previous digest (results.id is not covered:
# the order is proven by the links, and an id is not known before the row is inserted).
CHAIN_COLUMNS = (
    "run_id, asset, validator, kind, outcome, started_at, finished_at, recovery_point, figures, findings, copies, "
    "config_hash"
)
HEAD_TABLE = "CREATE TABLE result_chain (id INTEGER PRIMARY KEY CHECK (id = 1), last_id {bigint} NOT NULL, " \
             "head TEXT NOT NULL)"
TOMBSTONES_TABLE = """CREATE TABLE result_tombstones (
    id {bigint} PRIMARY KEY, run_id TEXT NOT NULL, finished_at {real} NOT NULL,
    prev_digest TEXT NOT NULL, digest TEXT NOT NULL, pruned_at {real} NOT NULL)"""
ADD_COLUMNS = (
    "ALTER TABLE results ADD COLUMN config_hash TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE results ADD COLUMN prev_digest TEXT",
    "ALTER TABLE results ADD COLUMN digest TEXT",
)
SELECT_ALL = f"SELECT id, {CHAIN_COLUMNS}, prev_digest, digest FROM results ORDER BY id"
SELECT_TOMBSTONES = "SELECT id, run_id, prev_digest, digest FROM result_tombstones ORDER BY id"
SELECT_HEAD = "SELECT last_id, head FROM result_chain WHERE id = 1"
# Prune: the rows it deletes leave their links (same WHERE as the DELETE that follows, same transaction).
PRUNE_CONDITION = ("finished_at < ? AND id NOT IN "
                   "(SELECT last_result_id FROM validator_state WHERE last_result_id IS NOT NULL)")
TOMBSTONE_INSERT = ("INSERT INTO result_tombstones (id, run_id, finished_at, prev_digest, digest, pruned_at) "
                    f"SELECT id, run_id, finished_at, prev_digest, digest, ? FROM results WHERE {PRUNE_CONDITION} "
                    "AND digest IS NOT NULL")


class ChainHeadMissing(Exception):
    """The one row of ``result_chain`` is gone (the table was truncated or the row deleted by hand): no result
    can be chained, and whatever removed it may have changed more. A store fault: results stay queued."""

    def __init__(self) -> None:
        super().__init__("the result chain's head row (table result_chain) is missing: the store was edited; "
                         "results are kept queued, not stored. `drwatch verify-report` shows what else changed; "
                         "restore the store from its backup")


def head_of(row: Sequence[Any] | None) -> tuple[int, str]:
    """(last_id, head digest) of the ``SELECT_HEAD`` row; ``ChainHeadMissing`` when there is none."""
    if row is None:
        raise ChainHeadMissing
    return int(row[0]), str(row[1])


def head_or_genesis(row: Sequence[Any] | None) -> tuple[int, str]:
    """(last_id, head digest) for a report: a missing head row reads as the genesis (the chain check says what
    is wrong with it; the report is still made)."""
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def _fields(values: Sequence[Any]) -> list[Any]:
    """The covered values normalised to what either backend hands back (times as floats, texts as str)."""
    (run_id, asset, validator, kind, outcome, started, finished, rp, figures, findings, copies, chash) = values
    return [str(run_id), str(asset), str(validator), str(kind), str(outcome), float(started), float(finished),
            None if rp is None else float(rp), str(figures), str(findings), str(copies), str(chash or "")]


# json.dumps(..., separators=(",", ":")) builds this encoder on every call: made once (the same output), it is
# a third of the cost of re-hashing a store (verify-report, and every report's chain check).
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def digest(prev: str, values: Sequence[Any]) -> str:
    """The digest of a result given the previous link's digest and its covered values (CHAIN_COLUMNS order)."""
    return hashlib.sha256(_CONTEXT + _ENCODE([prev, *_fields(values)]).encode()).hexdigest()


# The schema 5 migration chains the stored results in batches of this many (keyset pages by id): a big store
# is never held in memory at once, and each statement stays well within the store's command timeout.
MIGRATE_BATCH = 5000
SELECT_UNCHAINED = f"SELECT id, {CHAIN_COLUMNS} FROM results WHERE id > ? ORDER BY id LIMIT ?"


def link_existing(rows: Iterable[Sequence[Any]], prev: str = GENESIS,
                  last_id: int = 0) -> tuple[list[tuple[str, str, int]], int, str]:
    """Chain rows ``(id, *CHAIN_COLUMNS)`` in id order after ``prev`` (the genesis, or the last digest of the
    batch before): the (prev, digest, id) updates, and the head (last id, digest). Used by the schema 5
    migration, one batch at a time."""
    updates: list[tuple[str, str, int]] = []
    for row in rows:
        d = digest(prev, row[1:])
        updates.append((prev, d, int(row[0])))
        prev, last_id = d, int(row[0])
    return updates, last_id, prev


@dataclass(frozen=True)
class Problem:
    """One break of the chain: ``kind`` is edited | deleted | reordered | head | unchained."""

    kind: str
    id: int
    run_id: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "run_id": self.run_id, "detail": self.detail}


@dataclass(frozen=True)
class ChainCheck:
    """The store's chain as verified: every link by id (digest, run id, pruned?) and what is broken."""

    links: dict[int, tuple[str, str, bool]]
    head_id: int
    head: str
    problems: tuple[Problem, ...]
    results: int
    pruned: int

    @property
    def intact(self) -> bool:
        return not self.problems


Link = tuple[int, str, str | None, str | None, str | None]  # id, run_id, prev, digest, recomputed
# Verifying pages through the results by id (as the migration does): only each row's link is kept.
SELECT_PAGE = f"SELECT id, {CHAIN_COLUMNS}, prev_digest, digest FROM results WHERE id > ? ORDER BY id LIMIT ?"


def links_of(rows: Iterable[Sequence[Any]]) -> list[Link]:
    """Rows ``(id, *CHAIN_COLUMNS, prev_digest, digest)`` as their links, each digest recomputed."""
    out: list[Link] = []
    for row in rows:
        prev, stored = row[-2], row[-1]
        out.append((int(row[0]), str(row[1]), prev, stored, None if prev is None else digest(str(prev), row[1:-2])))
    return out


def check(rows: Iterable[Sequence[Any]], tombstones: Iterable[Sequence[Any]],
          head: Sequence[Any] | None) -> ChainCheck:
    """Verify the chain from rows ``(id, *CHAIN_COLUMNS, prev_digest, digest)``, tombstones
    ``(id, run_id, prev_digest, digest)`` and the head row ``(last_id, head)``."""
    return check_links(links_of(rows), tombstones, head)


def check_links(stored_links: Iterable[Link], tombstones: Iterable[Sequence[Any]],
                head: Sequence[Any] | None) -> ChainCheck:
    """:func:`check` from the results' links (:func:`links_of`, computed page by page for a big store)."""
    merged: dict[int, tuple[str, str | None, str | None, str | None]] = {}  # id -> run_id, prev, digest, recomputed
    problems: list[Problem] = []
    results = 0
    for rid, run, prev, stored, recomputed in stored_links:
        merged[rid] = (run, prev, stored, recomputed)
        results += 1
    tomb_ids: set[int] = set()
    for rid, run_id, prev, stored in tombstones:
        if int(rid) not in merged:
            merged[int(rid)] = (str(run_id), prev, stored, stored)
            tomb_ids.add(int(rid))
    digests = {p[2] for p in merged.values() if p[2] is not None}
    links: dict[int, tuple[str, str, bool]] = {}  # id -> (digest, run id, pruned)
    expected = GENESIS
    last_id = 0
    for rid in sorted(merged):
        run_id, prev, stored, recomputed = merged[rid]
        if prev is None or stored is None:
            problems.append(Problem("unchained", rid, run_id, "the result carries no chain digest"))
            continue
        if recomputed != stored:
            problems.append(Problem("edited", rid, run_id,
                                    "the stored result does not hash to its digest: it was edited after it was stored"))
        elif prev != expected:
            if prev in digests:
                problems.append(Problem("reordered", rid, run_id, "the result it follows in the chain is stored "
                                        "at another place: results were reordered"))
            else:
                problems.append(Problem("deleted", rid, run_id, "the result before it in the chain is gone "
                                        "without a prune tombstone: a result was deleted"))
        links[rid] = (stored, run_id, rid in tomb_ids)
        expected = stored
        last_id = rid
    head_id, head_digest = (0, GENESIS) if head is None else (int(head[0]), str(head[1]))
    if head is None and last_id:
        problems.append(Problem("head", 0, "", "the chain head row (result_chain) is gone: the table was emptied or "
                                               "truncated after the results were stored"))
    elif head_id != last_id or head_digest != expected:
        if head_id > last_id:
            detail = (f"the chain head names result id {head_id}, the newest stored link is {last_id}: "
                      "the newest results were deleted")
        else:
            detail = f"the chain head ({head_id}) does not match the newest stored link ({last_id})"
        problems.append(Problem("head", head_id, "", detail))
    return ChainCheck(links, head_id, head_digest, tuple(problems), results, len(tomb_ids))
