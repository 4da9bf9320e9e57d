"""``layout: mlflow`` of the ``dataset`` validator: the MLflow file store's own structure, in one location.

An MLflow file store is ``<experiment>/<run>/{meta.yaml, params/, metrics/, tags/, artifacts/}`` plus
``<experiment>/meta.yaml``. In every location, every experiment and every run of the sealed recovery point
must have a ``meta.yaml`` that parses and names its own directory (experiment id, run id), and every model a
run logged (tag ``mlflow.log-model.history``) must exist under ``artifacts/`` with its ``MLmodel`` file.

The structure comes from the seal's keys (what the recovery point holds), so a copy that lost a whole run is
caught by the seal merge as missing files, and here only what those files say is checked. Reads are small
(``meta.yaml`` and the history tag, at most 1 MiB each) and parsed in threads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from drwatch.formats.parquet import s3_fetcher
from drwatch.storage.s3 import S3Unavailable
from drwatch.storage.sources import FilesystemSource, S3Source, Source

SMALL_READ = 1024 * 1024  # MLflow meta files are read whole up to this size
RUN_ITEMS = frozenset({"meta.yaml", "params", "metrics", "tags", "artifacts"})
EXPERIMENT_DIRS = frozenset({"tags", "datasets"})  # experiment-level directories that are not runs
MODEL_HISTORY = "tags/mlflow.log-model.history"
READS_AT_ONCE = 8


@dataclass(frozen=True)
class Layout:
    experiments: set[str] = field(default_factory=set)
    runs: set[tuple[str, str]] = field(default_factory=set)  # (experiment, run id)


class Sink(Protocol):
    """One location: how to read a key, and where verdicts go."""

    async def read(self, key: str) -> bytes: ...

    def bad(self, code: str, message: str, subject: str) -> None:
        """The layout is broken (the backup is bad)."""

    def unreadable(self, message: str, subject: str) -> None:
        """A file could not be read (we could not check)."""


def of(keys: set[str]) -> Layout:
    """Experiments and runs of an MLflow file store, from its keys (the trash and the model registry are not
    experiments)."""
    layout = Layout()
    for key in keys:
        p = key.split("/")
        if p[0].startswith(".") or p[0] == "models":  # .trash, the model registry
            continue
        if len(p) == 2 and p[1] == "meta.yaml":
            layout.experiments.add(p[0])
        elif len(p) >= 3 and p[2] in RUN_ITEMS and p[1] not in EXPERIMENT_DIRS:
            layout.experiments.add(p[0])
            layout.runs.add((p[0], p[1]))
    return layout


async def read_small(src: Source, key: str) -> bytes:
    """A whole small file of a location; ValueError when it is larger than ``SMALL_READ``."""
    if isinstance(src, FilesystemSource):
        path = src.root.joinpath(*key.split("/"))

        def read() -> bytes:
            with open(path, "rb") as fh:
                return fh.read(SMALL_READ + 1)

        data = await asyncio.to_thread(read)
    else:
        assert isinstance(src, S3Source)
        data = await s3_fetcher(src.client, src.prefix, key)(0, SMALL_READ + 1)
    if len(data) > SMALL_READ:
        raise ValueError(f"larger than {SMALL_READ} bytes")
    return data


async def check(keys: set[str], layout: Layout, sink: Sink) -> None:
    """Check every experiment and run of ``layout`` in the location behind ``sink``."""
    c = _Checker(keys, sink)
    await asyncio.gather(*(c.experiment(e) for e in sorted(layout.experiments)),
                         *(c.run(e, r) for e, r in sorted(layout.runs)))


class _Checker:
    """The checks of one location, at most ``READS_AT_ONCE`` documents read at a time."""

    def __init__(self, keys: set[str], sink: Sink) -> None:
        self.keys, self.sink = keys, sink
        self.sem = asyncio.Semaphore(READS_AT_ONCE)

    async def load(self, key: str, parse: Callable[[bytes], Any]) -> tuple[bool, Any]:
        """(True, document) or (False, None) when it could not be read or parsed (already reported)."""
        sink = self.sink
        async with self.sem:
            try:
                data = await sink.read(key)
            except FileNotFoundError:
                return False, None  # reported by the seal merge as missing_file
            except ValueError as exc:
                sink.bad("mlflow_meta_invalid", str(exc), key)
                return False, None
            except S3Unavailable as exc:
                sink.unreadable(f"cannot read: {exc.message}", key)
                return False, None
            except OSError as exc:
                sink.unreadable(f"cannot read: {exc.strerror or type(exc).__name__}", key)
                return False, None
        try:
            return True, await asyncio.to_thread(parse, data)
        except (yaml.YAMLError, ValueError, UnicodeDecodeError) as exc:
            sink.bad("mlflow_meta_invalid", f"does not parse ({type(exc).__name__})", key)
            return False, None

    async def experiment(self, exp: str) -> None:
        meta = f"{exp}/meta.yaml"
        if meta not in self.keys:
            self.sink.bad("mlflow_meta_missing", "experiment directory without meta.yaml", exp)
            return
        ok, doc = await self.load(meta, yaml.safe_load)
        if ok and (not isinstance(doc, dict) or str(doc.get("experiment_id")) != exp):
            self.sink.bad("mlflow_meta_invalid", f"experiment_id is not {exp!r}", meta)

    async def run(self, exp: str, run_id: str) -> None:
        base, sink = f"{exp}/{run_id}", self.sink
        if f"{base}/meta.yaml" not in self.keys:
            sink.bad("mlflow_meta_missing", "run directory without meta.yaml", base)
        else:
            ok, doc = await self.load(f"{base}/meta.yaml", yaml.safe_load)
            if ok and not isinstance(doc, dict):
                sink.bad("mlflow_meta_invalid", "meta.yaml is not a mapping", f"{base}/meta.yaml")
            elif ok and str(doc.get("run_id") or doc.get("run_uuid")) != run_id:
                sink.bad("mlflow_run_id_mismatch", f"run id {doc.get('run_id')!r} is not the directory name",
                         f"{base}/meta.yaml")
            elif ok and str(doc.get("experiment_id")) != exp:
                sink.bad("mlflow_run_id_mismatch", f"experiment_id {doc.get('experiment_id')!r} is not {exp!r}",
                         f"{base}/meta.yaml")
        if f"{base}/{MODEL_HISTORY}" in self.keys:
            await self.models(base)

    async def models(self, base: str) -> None:
        """Every model the run logged has its ``MLmodel`` under ``artifacts/``."""
        ok, models = await self.load(f"{base}/{MODEL_HISTORY}", json.loads)
        if ok and not (isinstance(models, list) and all(isinstance(m, dict) for m in models)):
            self.sink.bad("mlflow_meta_invalid", "the logged-model history is not a list of models",
                          f"{base}/{MODEL_HISTORY}")
        elif ok:
            for m in models:
                path = str(m.get("artifact_path", "")).strip("/")
                if not path or f"{base}/artifacts/{path}/MLmodel" not in self.keys:
                    self.sink.bad("mlflow_artifact_missing", f"logged model {path!r} has no artifacts/{path}/MLmodel",
                                  base)
