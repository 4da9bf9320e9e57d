"""The ``model_weights`` validator's configuration: which copies, whether production and the safetensors structure
are checked, and the optional inference smoke test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from drwatch.core.errors import ConfigProblem
from drwatch.core.extras import ENGINES, Need
from drwatch.validators.base import ValidatorConfigBase
from drwatch.validators.copies.posture import unknown_copies
from drwatch.validators.model.inference.drill import InferenceConfig

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView


class ModelWeightsConfig(ValidatorConfigBase):
    kind: Literal["model_weights"] = "model_weights"
    copies: list[str] | None = None  # check only these copies (default: all)
    production: bool = True  # verify production against the seal too
    structure: bool = True  # safetensors headers and index files
    list_limit: int = Field(default=10, ge=1)
    inference: InferenceConfig | None = None

    def inference_copy(self, asset: AssetView) -> str | None:
        if self.inference is None:
            return None
        if self.inference.copy_name is not None:
            return self.inference.copy_name
        return asset.copies[0].label if asset.copies else None

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        known = {c.label for c in asset.copies}
        problems = unknown_copies(self.copies, asset)
        if self.inference is not None:
            name = self.inference_copy(asset)
            if name is None:
                problems.append(ConfigProblem("inference.copy", "the asset has no backup copy to restore"))
            elif name not in known:
                problems.append(ConfigProblem("inference.copy", f"unknown copy {name!r} (asset copies: "
                                                                f"{sorted(known)})"))
            elif self.copies is not None and name not in self.copies:
                problems.append(ConfigProblem("inference.copy", f"copy {name!r} is not among 'copies'"))
        return problems

    def needs(self) -> list[Need]:
        if self.inference is None or self.inference.python is not None:  # another interpreter: not checkable here
            return []
        return [Need("inference.engine", ENGINES[self.inference.engine], "inference_engine_missing",
                     f"the inference engine {self.inference.engine}")]
