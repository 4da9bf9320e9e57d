"""The state of a consistency group, from the stored result of the validator that checks it.

A RAG system restored from a vector index of Monday, a document store of Friday and the model of last month
answers wrongly while every piece is "restored". The pure skew logic (the newest consistent set of proven
recovery points) is :mod:`drwatch.validators.groups`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from drwatch.core.model import Outcome, Result

if TYPE_CHECKING:
    from drwatch.config.model import Config
    from drwatch.state.snapshot import Snapshot


class GroupState(enum.StrEnum):
    CONSISTENT = "consistent"  # newest recovery points within max_skew, stamps and documents agree
    SKEWED = "skewed"  # newest recovery points further apart than max_skew
    INCONSISTENT = "inconsistent"  # embedding-model stamp or document coverage disagree
    UNKNOWN = "unknown"  # not checked, could not check, or stale


GROUP_STATES: tuple[str, ...] = tuple(s.value for s in GroupState)


def group_state(cfg: Config, snap: Snapshot, group: str, now: float) -> tuple[GroupState, Result | None]:
    """The state of a consistency group from the latest result of the validator that checks it."""
    for asset, vcfg in cfg.iter_validators():
        if vcfg.kind != "consistency_group" or getattr(vcfg, "group", None) != group:
            continue
        stats = snap.stats(asset, vcfg.label)
        res = stats.last_result if stats is not None else None
        if res is None or res.finished_at + vcfg.effective_max_age(cfg) < now:
            return GroupState.UNKNOWN, res
        if res.outcome == Outcome.OK:
            return GroupState.CONSISTENT, res
        if res.outcome == Outcome.FAILED:
            skewed = res.figures.get("skewed", 0.0) > 0
            return (GroupState.SKEWED if skewed else GroupState.INCONSISTENT), res
        return GroupState.UNKNOWN, res
    return GroupState.UNKNOWN, None
