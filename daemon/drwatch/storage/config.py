"""Location configuration: a discriminated union on ``kind`` (one model per location kind)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FilesystemLocationConfig(BaseModel):
    """A mounted path (local disk, NAS, removable media). Read-only to drwatch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["filesystem"]
    path: str
    site: str = ""
    region: str = ""
    provider: str = "local"
    media: str | None = None
    offline: bool = False
    max_concurrency: int | None = Field(default=None, ge=1, le=1000)


# Later kinds (s3, azure) join this union; keep LOCATION_KINDS in step.
LocationConfig = FilesystemLocationConfig
LOCATION_KINDS: frozenset[str] = frozenset({"filesystem"})
