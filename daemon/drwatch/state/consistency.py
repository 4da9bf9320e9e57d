"""Pure logic of consistency groups: how far apart the members' recovery points are, and the newest set of
recovery points (one per member) that lies within the allowed skew.

A RAG system restored from a vector index of Monday, a document store of Friday and the model of last month
answers wrongly while every piece is "restored". The members' candidate recovery points are what drwatch
proved each copy holds (verified copies, fresh results); this module chooses among them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SkewVerdict:
    newest: dict[str, float]  # per member, its newest proven recovery point
    skew: float  # seconds between the oldest and the newest of ``newest``
    consistent_set: dict[str, float] | None  # newest set within max_skew (== newest when not skewed)

    @property
    def skewed(self) -> bool:
        return self.consistent_set != self.newest

    def consistent_set_point(self) -> float | None:
        """The point in time the consistent set restores to (its oldest member)."""
        return min(self.consistent_set.values()) if self.consistent_set else None


def skew(points: Mapping[str, float]) -> float:
    return max(points.values()) - min(points.values()) if points else 0.0


def newest_consistent_set(candidates: Mapping[str, Sequence[float]], max_skew: float) -> dict[str, float] | None:
    """One candidate per member, all within ``max_skew`` of each other, with the newest oldest member.

    Among the sets whose oldest member is newest, the one whose members are newest is chosen (each member
    takes its newest candidate in the window). ``None`` when a member has no candidate or no window fits.
    """
    if not candidates or any(not pts for pts in candidates.values()):
        return None
    # The oldest member of an optimal set is one of the candidates: try each as the window's lower edge,
    # newest first. The first window where every member has a candidate is optimal: a lower edge further
    # down cannot give a newer oldest member (its members would all fit the earlier window too).
    for low in sorted({p for pts in candidates.values() for p in pts}, reverse=True):
        high = low + max_skew
        chosen: dict[str, float] = {}
        for member, pts in candidates.items():
            inside = [p for p in pts if low <= p <= high]
            if not inside:
                break
            chosen[member] = max(inside)
        else:
            return chosen
    return None


def judge_skew(candidates: Mapping[str, Sequence[float]], max_skew: float) -> SkewVerdict | None:
    """The skew of the members' newest points and the newest consistent set; None if a member has no point."""
    if not candidates or any(not pts for pts in candidates.values()):
        return None
    newest = {m: max(pts) for m, pts in candidates.items()}
    if skew(newest) <= max_skew:
        return SkewVerdict(newest, skew(newest), dict(newest))
    return SkewVerdict(newest, skew(newest), newest_consistent_set(candidates, max_skew))


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
