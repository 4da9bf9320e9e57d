"""Consistency groups: assets restored together (a RAG system: index, model, documents), their configuration
(``consistency_groups:``) and the pure newest-consistent-set logic. The ``consistency_group`` validator checks a
group (:mod:`drwatch.validators.consistency_group`); the group's state is a projection of that validator's
stored result (:mod:`drwatch.state.consistency`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from drwatch.core.durations import Duration
from drwatch.core.errors import ConfigProblem
from drwatch.validators.postgres import pgtools


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddingModelCheck(_Model):
    """The vector index was embedded with exactly the model that is backed up."""

    vectors: str  # asset whose seal carries the stamp
    model: str  # asset whose seal digest the stamp must equal
    key: str = "embedding_model"  # field of the vectors seal's header ``extra``


class DocumentIds(pgtools.DsnRef):
    """Where the vector index's document ids are read (read-only): its production database."""

    table: str
    column: str


class DocumentsCheck(_Model):
    """Document ids referenced by the vector index exist in the document store's recovery point."""

    asset: str  # the document store asset
    path: str = Field(pattern=r"\{id\}")  # key of one document under the asset's prefix, e.g. "docs/{id}.md"
    ids: DocumentIds
    sample: int = Field(default=200, ge=1, le=100_000)


class ConsistencyGroupConfig(_Model):
    """Assets restored together (a RAG system: index, model, documents); checked by a ``consistency_group``
    validator on one member."""

    assets: list[str] = Field(min_length=2)
    max_skew: Duration
    embedding_model: EmbeddingModelCheck | None = None
    documents: DocumentsCheck | None = None


def group_problems(name: str, group: ConsistencyGroupConfig) -> list[ConfigProblem]:
    """References inside a group's optional checks must be members (paths relative to the group)."""
    problems: list[ConfigProblem] = []
    members = set(group.assets)
    if group.embedding_model is not None:
        for fld in ("vectors", "model"):
            value = getattr(group.embedding_model, fld)
            if value not in members:
                problems.append(ConfigProblem(f"embedding_model.{fld}", f"{value!r} is not a member of the group"))
    if group.documents is not None and group.documents.asset not in members:
        problems.append(ConfigProblem("documents.asset", f"{group.documents.asset!r} is not a member of the group"))
    return problems


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
