"""`drwatch check-config` tells the truth: each warning says what `run`/`check` then do, and they do it (a missing
secret, a missing optional extra, a location path that is not there); YAML errors point at the line the parser
blames first; the problems of a huge broken file are capped; every command's `--help` says what it does and
lists every exit status it really returns.

Everything runs as real subprocesses (`python -m drwatch`), S3 on a moto server on loopback, missing Python
modules hidden from the subprocess by a meta-path finder (a venv without them would take minutes to build).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import s3helpers
from tests.support.helpers import (
    DaemonProcess,
    basic_config,
    drwatch_cmd,
    free_port,
    populate,
    write_config,
    write_tree,
)
from tests.support.s3servers import MotoServer

REPO = Path(__file__).resolve().parent.parent
# Root without the capabilities that let it read any file (as in test_seal_cli): "not readable" for real.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
          "--inh-caps=-dac_override,-dac_read_search", "--"]

# `python -c BLOCKER MODULES drwatch-args...`: drwatch's own main() with MODULES unimportable, as on a host
# where the optional extra is not installed (find_spec and import both raise ModuleNotFoundError).
BLOCKER = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = names
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
        return None
sys.meta_path.insert(0, Blocked(set(sys.argv[1].split(","))))
sys.argv = ["drwatch", *sys.argv[2:]]
from drwatch.cli.main import main
sys.exit(main())
"""


def install(extra: str) -> str:
    """The install hint drwatch prints for a missing extra: this interpreter's pip, from a drwatch checkout."""
    return f"{Path(sys.prefix) / 'bin' / 'pip'} install '.[{extra}]' (in the drwatch checkout)"


def drwatch(*args: str, env: Mapping[str, str] | None = None, unset: Sequence[str] = (),
            blocked: Sequence[str] = (), prefix: Sequence[str] = (), timeout: float = 120,
            ) -> subprocess.CompletedProcess[str]:
    """`drwatch ARGS` in a subprocess: ``env`` added to this environment, ``unset`` removed from it,
    ``blocked`` modules hidden, ``prefix`` a command to run it under (setpriv)."""
    full = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    cmd = [sys.executable, "-c", BLOCKER, ",".join(blocked), *args] if blocked else drwatch_cmd(*args)
    return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout, env=full, check=False)


def warnings_of(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.removeprefix("drwatch: warning: ") for line in proc.stderr.splitlines()
            if line.startswith("drwatch: warning: ")]


def result_of(doc: Mapping[str, Any], validator: str) -> dict[str, Any]:
    [res] = [r for r in doc["results"] if r["validator"] == validator]
    assert isinstance(res, dict)
    return res


def check_config_then_check(config: Path, validator: str, **kw: Any
                            ) -> tuple[list[str], dict[str, Any], subprocess.CompletedProcess[str]]:
    """`check-config` on the file (exit 0), then `check --output json` on it under the same conditions (``kw``, as
    for :func:`drwatch`): check-config's warnings, ``validator``'s result, and the check's process."""
    said = drwatch("check-config", str(config), **kw)
    assert said.returncode == 0, said.stderr
    done = drwatch("check", "--config", str(config), "--output", "json", **kw)
    return warnings_of(said), result_of(json.loads(done.stdout), validator), done


def codes(result: Mapping[str, Any]) -> set[str]:
    return {f["code"] for f in result["findings"]}


def port_of(config: Path) -> int:
    return int(yaml.safe_load(config.read_text())["http"]["listen"].rpartition(":")[2])


def unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    assert shutil.which("setpriv"), "needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE"
    return NO_DAC


# --- 1. secrets: the warning says what run/check do, and they do it --------------------------------------

def _s3_estate(tmp: Path, moto: MotoServer, creds: Mapping[str, str]) -> Path:
    """Production on disk, one copy on disk, one copy in a moto bucket whose keys come from ``creds``."""
    files = populate(tmp, copies=1)
    bucket = s3helpers.bucket(moto, "truth")
    s3helpers.upload(moto, bucket, files, prefix="data/")
    cfg = basic_config(tmp, copies=1, http_port=free_port())
    cfg["locations"]["bucket"] = {"kind": "s3", "bucket": bucket, "endpoint_url": moto.endpoint_url,
                                  "region": moto.region, "addressing_style": "path", "site": "dc-z",
                                  "max_attempts": 2, "connect_timeout": "2s", **creds}
    cfg["assets"]["data"]["copies"].append({"location": "bucket", "prefix": "data"})
    return write_config(tmp / "drwatch.yaml", cfg)


def test_a_missing_s3_key_warns_what_check_and_run_then_do(tmp_path: Path, moto: MotoServer) -> None:
    """An S3 key in an unset variable (then in an empty file): check-config warns that run/check start but the
    checks needing it end as `error` (secret_unavailable); `check` and `run` do exactly that (no crash, no
    `internal_error`, no traceback). With the variables set, there is no warning and the check is ok."""
    names = {"access_key_id_env": "DRW_TRUTH_AK", "secret_access_key_env": "DRW_TRUTH_SK"}
    assert not set(names.values()) & set(os.environ), "the test's variable names must be unset here"
    config = _s3_estate(tmp_path, moto, names)

    said = drwatch("check-config", str(config))
    assert said.returncode == 0, said.stderr
    assert warnings_of(said) == [
        f"locations.bucket.{field}: environment variable {var} is not set here: `drwatch run`/`check` in this "
        "environment start, but each check that needs it ends as `error` (secret_unavailable); the service may "
        "get it from its unit" for field, var in names.items()]

    done = drwatch("check", "--config", str(config), "--output", "json")
    assert done.returncode == 2, done.stderr
    res = result_of(json.loads(done.stdout), "replica")
    assert res["outcome"] == "error" and codes(res) == {"secret_unavailable"}, res
    [finding] = res["findings"]
    assert "locations.bucket.access_key_id: environment variable DRW_TRUTH_AK is not set" in finding["message"]
    assert "Traceback" not in done.stderr

    daemon = DaemonProcess(config, port_of(config))
    daemon.start()  # it starts, as the warning says
    try:
        def replica_result() -> Any:
            doc = json.loads(daemon.get("/api/v1/status")[1])
            found = [r for r in doc["results"] if r["validator"] == "replica"]
            return found[0] if found else None

        res = daemon.wait_for(replica_result)
        assert res["outcome"] == "error" and codes(res) == {"secret_unavailable"}, res
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log() and "validator_bug" not in daemon.log()

    env = {"DRW_TRUTH_AK": moto.access_key, "DRW_TRUTH_SK": moto.secret_key}
    said = drwatch("check-config", str(config), env=env)
    assert said.returncode == 0 and warnings_of(said) == [], said.stderr
    done = drwatch("check", "--config", str(config), "--output", "json", env=env)
    assert result_of(json.loads(done.stdout), "replica")["outcome"] == "ok", done.stdout

    # A key file that is there but empty is no key: the same warning and the same `error`, never an empty key.
    (tmp_path / "ak").write_text(moto.access_key)
    (tmp_path / "sk").write_text("\n")
    for name in ("ak", "sk"):
        (tmp_path / name).chmod(0o600)
    config = _s3_estate(tmp_path / "files", moto, {"access_key_id_file": str(tmp_path / "ak"),
                                                   "secret_access_key_file": str(tmp_path / "sk")})
    warned, res, _ = check_config_then_check(config, "replica")
    assert warned == [
        f"locations.bucket.secret_access_key_file: secret file {tmp_path / 'sk'} is empty: `drwatch run`/`check` "
        "in this environment start, but each check that needs it ends as `error` (secret_unavailable); the "
        "service may get it from its unit"]
    assert res["outcome"] == "error" and codes(res) == {"secret_unavailable"}, res
    assert f"secret file {tmp_path / 'sk'} is empty" in res["findings"][0]["message"]


def test_a_missing_store_dsn_warns_that_run_check_and_status_exit_78(tmp_path: Path) -> None:
    """The store's DSN in an unset variable: check-config (exit 0) warns that run, check and status exit 78 at
    start; each of them does, naming the field and the variable."""
    populate(tmp_path)
    cfg = basic_config(tmp_path, store={"postgres": {"dsn_env": "DRW_TRUTH_DSN"}})
    config = write_config(tmp_path / "drwatch.yaml", cfg)
    said = drwatch("check-config", str(config), unset=["DRW_TRUTH_DSN"])
    assert said.returncode == 0, said.stderr
    assert warnings_of(said) == [
        "store.postgres.dsn_env: environment variable DRW_TRUTH_DSN is not set here: `drwatch run`, `check` and "
        "`status` in this environment exit 78 at start (the store's DSN); the service may get it from its unit"]
    for command in ("run", "check", "status"):
        done = drwatch(command, "--config", str(config), unset=["DRW_TRUTH_DSN", "INVOCATION_ID", "NOTIFY_SOCKET"])
        assert done.returncode == 78, (command, done.stderr)
        assert "store.postgres: environment variable DRW_TRUTH_DSN is not set" in done.stderr, (command, done.stderr)


def test_a_dependency_ca_file_is_no_secret_and_a_missing_one_is_warned_as_check_then_finds_it(tmp_path: Path) -> None:
    """A recovery dependency's ``ca_file`` is a public CA bundle read from its path: a world-readable one (0644, as
    CA bundles are) is not warned about as a secret, and a missing one is warned about with what `check` then
    concludes (dependency_not_checked), not as a secret looked up in $CREDENTIALS_DIRECTORY ending as
    secret_unavailable; `check` on the same file does what the warning says and uses the readable bundle."""
    from tests.support.pki import ScratchCA

    ca = ScratchCA(tmp_path / "pki", "deps")
    ca.cert_path.chmod(0o644)
    write_tree(tmp_path / "prod", {"a.bin": b"a"})
    away = {"site": "dc-b"}
    config = write_config(tmp_path / "drwatch.yaml", {
        "store": {"sqlite": str(tmp_path / "state.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "locations": {"prod": {"kind": "filesystem", "path": str(tmp_path / "prod"), "site": "dc-a"}},
        "assets": {"data": {"rpo": "1d", "production": {"location": "prod"}, "validators": [
            {"kind": "recovery_dependencies", "dependencies": [
                {"kind": "https", "name": "idp", "url": f"https://localhost:{free_port()}/",
                 "ca_file": str(ca.cert_path), **away},
                {"kind": "https", "name": "registry", "url": "https://localhost:1/", "ca_file": "pki/gone.pem",
                 **away}]}]}},
    })
    said, res, done = check_config_then_check(config, "recovery_dependencies")
    assert said == [
        f"assets.data.validators[0].dependencies[1].ca_file: {tmp_path / 'pki' / 'gone.pem'} no such file or "
        "directory: this dependency is not checked (`dependency_not_checked`, a warning: the run ends as `error` "
        "unless another dependency is down)"]
    by_dep = {f["subject"]: f["code"] for f in res["findings"]}
    assert by_dep == {"registry": "dependency_not_checked", "idp": "dependency_unreachable"}, res
    assert res["outcome"] == "failed" and done.returncode == 1


# --- 2. optional extras -------------------------------------------------------------------------------------

def test_example_config_warns_when_pyarrow_is_absent_and_check_agrees(tmp_path: Path) -> None:
    """config/example.yaml's dataset validator needs pyarrow (the `ml` extra): with pyarrow hidden, check-config
    names the validator, its field path and the extra to install, and says the run ends as `error`
    (pyarrow_missing); a `check` of a dataset validator under the same conditions does end so. With pyarrow
    installed (CI installs the extras), no such warning."""
    assert find_spec("pyarrow") is not None, "CI installs the ml extra"
    example = str(REPO / "config" / "example.yaml")
    said = drwatch("check-config", example, blocked=["pyarrow"])
    assert said.returncode == 0, said.stderr
    assert ("assets.training-data.validators[0]: validator 'dataset' (dataset) needs pyarrow (it reads Parquet "
            "footers), not installed for this Python: each run would end as `error` (pyarrow_missing); install "
            "the `ml` extra: " + install("ml")) in warnings_of(said), said.stderr
    assert not [w for w in warnings_of(drwatch("check-config", example)) if "not installed for this Python" in w]

    populate(tmp_path, copies=1)
    config = write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, copies=1, validator={"kind": "dataset"}))
    said = drwatch("check-config", str(config), blocked=["pyarrow"])
    assert [w for w in warnings_of(said) if "(pyarrow_missing)" in w], said.stderr
    done = drwatch("check", "--config", str(config), "--output", "json", blocked=["pyarrow"])
    res = result_of(json.loads(done.stdout), "dataset")
    assert res["outcome"] == "error" and codes(res) == {"pyarrow_missing"}, res
    assert install("ml") in res["findings"][0]["message"]


def test_inference_engine_numpy_and_cluster_extras_are_reported(tmp_path: Path) -> None:
    """Each optional import a configuration relies on is reported when hidden: the inference engine of
    model_weights (sentence_transformers, torch: `ml`), numpy for .npy query vectors and for a Pinecone drill's
    exact top-k, and pgqueuer for cluster mode (which `run` refuses at start: exit 69)."""
    populate(tmp_path, copies=1)
    (tmp_path / "queries.npy").write_bytes(b"\x93NUMPY")
    cfg = basic_config(tmp_path, copies=1, validator={
        "kind": "model_weights", "inference": {"engine": "sentence_transformers", "goldens": "goldens.json"}})
    cfg["store"] = {"postgres": {"dsn_env": "DRW_TRUTH_CLUSTER_DSN"}}
    cfg["cluster"] = {"enabled": True, "node": "n1"}
    cfg["assets"]["index"] = {"rpo": "1d", "production": {"location": "prod", "prefix": "data"}, "validators": [
        {"kind": "vector_restore", "query_vectors": "queries.npy",
         "backend": {"type": "pinecone", "index": "prod-index", "api_key_env": "DRW_TRUTH_PC"}}]}
    config = write_config(tmp_path / "drwatch.yaml", cfg)
    env = {"DRW_TRUTH_CLUSTER_DSN": "postgresql://x@127.0.0.1:1/x", "DRW_TRUTH_PC": "pc-key"}
    said = drwatch("check-config", str(config), env=env, blocked=["sentence_transformers", "numpy", "pgqueuer"])
    assert said.returncode == 0, said.stderr
    found = warnings_of(said)
    expected = [
        "assets.data.validators[0].inference.engine: validator 'model_weights' (model_weights) needs "
        "sentence_transformers (the inference engine sentence_transformers), not installed for this Python: each "
        "run would end as `error` (inference_engine_missing); install the `ml` extra: " + install("ml"),
        "assets.index.validators[0].query_vectors: validator 'vector_restore' (vector_restore) needs numpy (a .npy "
        "matrix of query vectors), not installed for this Python: each run would end as `error` (extra_missing); "
        "install the `ml` extra: " + install("ml"),
        "assets.index.validators[0].backend.exact_scan_max_vectors: validator 'vector_restore' (vector_restore) "
        "needs numpy (the exact top-k of namespaces up to this size), not installed for this Python: each run "
        "would end as `error` (extra_missing); install the `pinecone` extra: " + install("pinecone"),
        "cluster.enabled: cluster mode needs pgqueuer (its job engine), not installed for this Python: `drwatch "
        "run` would exit 69 at start; install the `cluster` extra: " + install("cluster"),
    ]
    assert [w for w in found if "not installed for this Python" in w] == expected, found
    said = drwatch("check-config", str(config), env=env)
    assert not [w for w in warnings_of(said) if "not installed for this Python" in w], said.stderr


# --- 3. location paths ---------------------------------------------------------------------------------------

def test_location_paths_that_are_not_there_are_warned_as_check_then_finds_them(tmp_path: Path) -> None:
    """Filesystem locations: not found, not a directory, an empty directory that is not a mount point (an
    unmounted disk), not readable (as a user without CAP_DAC_OVERRIDE), offline and absent (normal), and a
    copy's directory missing from a location that is there (a bad backup). Warnings, exit 0; `check` on the
    same file concludes what each warning said."""
    write_tree(tmp_path / "prod" / "data", {"a.bin": b"a"})
    (tmp_path / "empty").mkdir()
    write_tree(tmp_path / "there", {"other/x": b"x"})
    write_tree(tmp_path / "locked", {"data/a.bin": b"a"})
    (tmp_path / "file").write_text("not a directory")
    locs = {"prod": tmp_path / "prod", "gone": tmp_path / "nothing-here", "file": tmp_path / "file",
            "empty": tmp_path / "empty", "locked": tmp_path / "locked", "tape": tmp_path / "tape-mount",
            "there": tmp_path / "there"}
    cfg: dict[str, Any] = {
        "store": {"sqlite": str(tmp_path / "state.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "locations": {n: {"kind": "filesystem", "path": str(p), "site": f"s-{n}", "offline": n == "tape"}
                      for n, p in locs.items()},
        "assets": {"data": {"rpo": "1d", "production": {"location": "prod", "prefix": "data"},
                            "copies": [{"location": n, "prefix": "data"} for n in locs if n != "prod"],
                            "validators": [{"kind": "replica"}]}},
    }
    config = write_config(tmp_path / "drwatch.yaml", cfg)
    (tmp_path / "locked").chmod(0)
    try:
        said = drwatch("check-config", str(config), prefix=unprivileged())
        done = drwatch("check", "--config", str(config), "--output", "json", prefix=unprivileged())
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert said.returncode == 0, said.stderr
    unavailable = "checks reading it end as `error` (location_unavailable) until it is mounted and readable"
    assert warnings_of(said) == [
        f"locations.gone.path: {locs['gone']} not found: {unavailable}",
        f"locations.file.path: {locs['file']} not a directory: {unavailable}",
        f"locations.empty.path: {locs['empty']} is an empty directory and not a mount point (not mounted?): "
        f"{unavailable}",
        f"locations.locked.path: {locs['locked']} not readable (permission denied for this user): {unavailable}",
        f"locations.tape.path: {locs['tape']} not found (declared offline: normal while it is not mounted; "
        "`drwatch attest` records a hand check)",
        f"assets.data.copies[5].prefix: {locs['there'] / 'data'} not found (location 'there' is there): a copy "
        "missing from a location that is there is a bad backup: checks end as `failed` (copy_missing)",
    ]
    res = result_of(json.loads(done.stdout), "replica")
    by_copy = {f["subject"]: f["code"] for f in res["findings"] if f.get("subject") in locs}
    assert by_copy == {"gone": "location_unavailable", "file": "location_unavailable",
                       "empty": "location_unavailable", "locked": "location_unavailable", "tape": "offline",
                       "there": "copy_missing"}, res
    assert res["outcome"] == "failed" and done.returncode == 1


def test_a_seal_public_key_that_is_not_there_is_warned_as_check_then_finds_it(tmp_path: Path) -> None:
    """An asset requiring signed seals whose ``seal_signature`` public key file is missing, then not a key, then
    not readable (as a user without CAP_DAC_OVERRIDE): check-config warns (exit 0) that checks reading the seal
    end as `error` (manifest_unreadable), and `check` on the same file does exactly that (never `failed`). With
    the real public key in place, no warning, and the signed seal verifies (`ok`)."""
    populate(tmp_path, copies=1)
    private, public = tmp_path / "keys" / "seal.key", tmp_path / "keys" / "seal.pub"
    public.parent.mkdir()
    assert drwatch("seal-keygen", "--private-key", str(private), "--public-key", str(public)).returncode == 0
    sealed = drwatch("seal", "--location-path", str(tmp_path / "prod" / "data"), "--sign", str(private))
    assert sealed.returncode == 0, sealed.stderr
    shutil.copy(tmp_path / "prod" / "data" / ".drwatch-manifest.jsonl", tmp_path / "copy1" / "data")
    key = tmp_path / "keys" / "configured.pub"
    cfg = basic_config(tmp_path, copies=1)
    cfg["assets"]["data"]["seal_signature"] = {"public_key_path": str(key), "required": True}
    config = write_config(tmp_path / "drwatch.yaml", cfg)
    effect = ("checks reading this asset's seal (replica, dataset, model_weights, consistency_group) end as "
              "`error` (manifest_unreadable) until the key is there and readable")

    said, res, _ = check_config_then_check(config, "replica")
    assert said == [f"assets.data.seal_signature.public_key_path: seal public key {key}: No such file or "
                    f"directory: {effect}"]
    assert res["outcome"] == "error" and "manifest_unreadable" in codes(res), res

    key.write_text("not a key\n")
    said, res, _ = check_config_then_check(config, "replica")
    assert said == [f"assets.data.seal_signature.public_key_path: seal public key {key}: not a PEM Ed25519 public "
                    f"key (openssl pkey -in KEY -pubout): {effect}"]
    assert res["outcome"] == "error" and "manifest_unreadable" in codes(res), res

    shutil.copy(public, key)
    if unprivileged():
        key.chmod(0)
        said, res, _ = check_config_then_check(config, "replica", prefix=unprivileged())
        assert said == [f"assets.data.seal_signature.public_key_path: seal public key {key}: Permission denied: "
                        f"{effect}"]
        assert res["outcome"] == "error" and "manifest_unreadable" in codes(res), res
        key.chmod(0o644)
    said, res, _ = check_config_then_check(config, "replica")
    assert not [w for w in said if "seal_signature" in w], said
    assert res["outcome"] == "ok", res


# --- 4. YAML errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("filler", [31, 200_000], ids=["small", "large-libyaml-message"])
def test_an_unclosed_quote_is_reported_at_its_line_first(tmp_path: Path, filler: int) -> None:
    """An unclosed quote on line 14: the problem's place is line 14 (where the quoted scalar began, PyYAML's
    context mark), then where the parser gave up (the end of the stream); also for a file large enough to be
    reported with libyaml's own message."""
    lines = [f"k{i}: v{i}" for i in range(1, 14)] + ['k14: "unclosed'] + [f"k{i}: v{i}" for i in range(15, filler + 1)]
    path = tmp_path / "broken.yaml"
    path.write_text("\n".join(lines) + "\n")
    done = drwatch("check-config", str(path))
    assert done.returncode == 78
    assert done.stderr.splitlines() == [
        f"drwatch: invalid configuration {path}:",
        f"  line 14, column 6: malformed YAML: while scanning a quoted scalar: found unexpected end of stream at "
        f"line {filler + 1}, column 1"], done.stderr


# --- 5. capped problems ----------------------------------------------------------------------------------------

def test_200k_bad_keys_print_50_problems_and_a_count_in_bounded_time(tmp_path: Path) -> None:
    """A 10 MB generated config with 200,000 unknown keys: 50 problems and "... and 199950 more problems"
    (text), the same 50 with problem_count/problems_not_shown (JSON); each run takes a few CPU seconds."""
    head = ["store: {sqlite: state.sqlite}", "locations:", f"  prod: {{kind: filesystem, path: {tmp_path}}}",
            "assets:", "  a:", "    rpo: 1d", "    production: {location: prod}"]
    body = [f"    bogus_key_{i:07d}: a value that pads this line to about fifty bytes" for i in range(200_000)]
    path = tmp_path / "huge.yaml"
    path.write_text("\n".join(head + body) + "\n")
    assert path.stat().st_size > 10_000_000

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = drwatch("check-config", str(path))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert done.returncode == 78
    lines = done.stderr.splitlines()
    assert len(lines) == 52, lines[:3]
    assert lines[1] == "  assets.a.bogus_key_0000000: unknown key (not allowed here)"
    assert lines[50] == "  assets.a.bogus_key_0000049: unknown key (not allowed here)"
    assert lines[51] == "  ... and 199950 more problems"
    assert cpu < 12, f"check-config took {cpu:.1f} s of CPU ({time.monotonic() - started:.1f} s wall)"

    done = drwatch("check-config", "--output", "json", str(path))
    assert done.returncode == 78
    doc = json.loads(done.stdout)
    assert doc["valid"] is False and doc["problem_count"] == 200_000 and doc["problems_not_shown"] == 199_950
    assert len(doc["problems"]) == 50 and doc["problems"][0]["path"] == "assets.a.bogus_key_0000000"


def test_a_config_over_16_mib_is_refused_before_parsing(tmp_path: Path) -> None:
    """What bounds memory (parsing costs ~25x a file's size): a file over 16 MiB is refused at once."""
    path = tmp_path / "runaway.yaml"
    path.write_text("# generated\n" * (1_500_000))
    done = drwatch("check-config", str(path))
    assert done.returncode == 78
    assert done.stderr.splitlines()[1] == ("  larger than 16 MiB: not a configuration drwatch reads (a generated "
                                           "file gone wrong?)")


# --- 6. --help and exit statuses ---------------------------------------------------------------------------------

def _help(command: str) -> tuple[str, set[int]]:
    """A command's --help: its description (the text before "options:") and the statuses its epilog lists."""
    done = drwatch(command, "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "exit status:" in text, text
    listed = {int(m) for m in re.findall(r"^\s+(\d+)\s{2}", text.split("exit status:", 1)[1], re.M)}
    listed |= {int(m) for m in re.findall(r"\(also (\d+) for a wrong command line", text)}
    description = text.split("\n\n", 2)[1]
    return description, listed


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def test_every_command_help_says_what_it_does_and_every_exit_status_it_returns(tmp_path: Path) -> None:
    """Each subcommand's --help has a description and an "exit status" list; each status provoked here for
    real (valid, invalid, unavailable store, a bad backup, an unreadable input...) is in that list."""
    from drwatch.cli.main import build_parser

    populate(tmp_path)
    good = write_config(tmp_path / "good.yaml", basic_config(tmp_path))
    compliant_cfg = basic_config(tmp_path)
    compliant_cfg["compliance"] = {"media": 1, "offsite": 0, "immutable": 0}
    compliant = write_config(tmp_path / "compliant.yaml", compliant_cfg)
    broken_cfg = basic_config(tmp_path, store={"sqlite": str(tmp_path / "u.db")})
    broken_cfg["locations"]["copy2"]["path"] = str(tmp_path / "unmounted")
    broken_cfg["compliance"] = {"copies": 1, "media": 1, "offsite": 0, "immutable": 0}
    unchecked = write_config(tmp_path / "unchecked.yaml", broken_cfg)
    pg_down = write_config(tmp_path / "pgdown.yaml", basic_config(
        tmp_path, store={"postgres": {"dsn_env": "DRW_TRUTH_DOWN", "connect_timeout": "2s"}}))
    down_env = {"DRW_TRUTH_DOWN": f"postgresql://drwatch@127.0.0.1:{_closed_port()}/drwatch"}
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("assets: [1, 2\n")
    write_tree(tmp_path / "rp", {"a.bin": b"a"})
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "l").symlink_to(tmp_path / "rp" / "a.bin")
    write_tree(tmp_path / "secret-rp", {"a.bin": b"a"})
    (tmp_path / "secret-rp" / "a.bin").chmod(0)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "mine.txt").write_text("keep")

    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = set(sub.choices)
    runs: list[tuple[str, int, subprocess.CompletedProcess[str]]] = []

    def expect(command: str, code: int, *args: str, **kw: Any) -> None:
        done = drwatch(command, *args, **kw)
        assert done.returncode == code, (command, args, code, done.returncode, done.stderr[-2000:])
        runs.append((command, code, done))

    expect("check-config", 0, str(good))
    expect("check-config", 78, str(invalid))
    expect("check-config", 2)
    expect("check", 78)
    expect("status", 69, "--config", str(compliant))
    expect("check", 0, "--config", str(compliant))
    expect("status", 0, "--config", str(compliant))
    expect("check", 1, "--config", str(good))
    expect("status", 1, "--config", str(good))
    expect("check", 2, "--config", str(unchecked))
    expect("status", 2, "--config", str(unchecked))
    expect("check", 69, "--config", str(pg_down), env=down_env)
    expect("status", 69, "--config", str(pg_down), env=down_env)
    expect("status", 78, "--config", str(invalid))
    expect("seal", 0, "--location-path", str(tmp_path / "rp"), "--out", str(tmp_path / "rp.seal"))
    expect("seal", 78, "--location-path", str(tmp_path / "nothing"))
    expect("seal", 65, "--location-path", str(tmp_path / "links"), "--out", str(tmp_path / "links.seal"))
    expect("seal", 66, "--location-path", str(tmp_path / "secret-rp"), "--out", str(tmp_path / "s.seal"),
           prefix=unprivileged())
    expect("seal", 73, "--location-path", str(tmp_path / "rp"), "--out", str(tmp_path / "good.yaml" / "x"))
    expect("seal", 1, "--location-path", str(tmp_path / "rp"), "--meta", "no-equals-sign")
    if "seal-keygen" in commands:  # (landed separately; the coverage assertion below holds either way)
        expect("seal-keygen", 0, "--private-key", str(tmp_path / "k"), "--public-key", str(tmp_path / "k.pub"))
        expect("seal-keygen", 73, "--private-key", str(tmp_path / "k"), "--public-key", str(tmp_path / "k2.pub"))
    expect("attest", 0, "data", "copy1", "--note", "checked", "--config", str(good))
    expect("attest", 78, "nope", "copy1", "--note", "checked", "--config", str(good))
    expect("attest", 69, "data", "copy1", "--note", "checked", "--config", str(pg_down), env=down_env)
    expect("ack", 0, "--asset", "data", "--by", "me", "--reason", "known", "--config", str(good))
    expect("ack", 78, "--asset", "nope", "--by", "me", "--reason", "known", "--config", str(good))
    report = tmp_path / "report.json"
    expect("report", 0, "--config", str(compliant), "--since", "1d", "--format", "json", "--out", str(report))
    expect("report", 78, "--config", str(compliant), "--since", "soon", "--out", str(tmp_path / "r2.json"))
    expect("report", 73, "--config", str(compliant), "--out", str(tmp_path / "good.yaml" / "x"))
    expect("report", 69, "--config", str(pg_down), "--out", str(tmp_path / "r3.json"), env=down_env)
    expect("verify-report", 0, str(report), "--config", str(compliant))
    expect("verify-report", 66, str(tmp_path / "no-such-report.json"), "--config", str(compliant))
    expect("verify-report", 69, str(report), "--config", str(pg_down), env=down_env)
    expect("demo", 0, "--dir", str(tmp_path / "demo"))
    expect("demo", 1, "--dir", str(tmp_path / "foreign"), "--force")
    expect("golden", 78, "record", "--asset", "data", unset=["DRWATCH_CONFIG"])
    expect("golden", 2, "record")
    expect("run", 78, env={"INVOCATION_ID": "test"}, unset=["DRWATCH_CONFIG"])
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        taken_config = write_config(tmp_path / "taken.yaml", basic_config(tmp_path, http_port=port))
        expect("run", 69, "--config", str(taken_config))
    run_config = write_config(tmp_path / "run.yaml", basic_config(tmp_path, http_port=free_port()))
    daemon = DaemonProcess(run_config, port_of(run_config))
    daemon.start()
    assert daemon.stop() == 0  # SIGTERM: a clean stop
    observed = {(c, code) for c, code, _ in runs} | {("run", 0)}
    assert all("Traceback" not in done.stderr for _, _, done in runs)

    assert {c for c, _ in observed} == commands, "provoke at least one status of every command"
    for command in sorted(commands):
        description, listed = _help(command)
        assert len(description.strip()) > 10, (command, description)
        missing = {code for c, code in observed if c == command} - listed
        assert not missing, f"`drwatch {command} --help` does not list exit status {sorted(missing)}"


def test_a_profile_missing_here_is_warned_and_checks_end_as_error(tmp_path: Path) -> None:
    """README's S3 example names AWS profiles. Where they are not configured (a fresh HOME, no AWS_* files),
    check-config warns for each, naming the field, and `check` ends as `error` (no_credentials) — it crashed
    with ProfileNotFound (internal_error) before."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true")
    cfg = yaml.safe_load((Path(__file__).parent.parent / "config" / "s3-locked.yaml").read_text())
    cfg["store"] = {"sqlite": str(tmp_path / "state.sqlite")}
    for loc in cfg["locations"].values():
        loc["endpoint_url"] = "http://127.0.0.1:9"  # nothing is asked of S3 before the credentials
        loc["connect_timeout"], loc["read_timeout"], loc["max_attempts"] = "1s", "1s", 1
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    checked = subprocess.run(drwatch_cmd("check-config", str(path)), capture_output=True, text=True, env=env,
                             timeout=60, check=False)
    assert checked.returncode == 0, checked.stderr
    for name, loc in cfg["locations"].items():
        assert f"locations.{name}.profile: AWS profile {loc['profile']!r} is not configured here" in checked.stderr
    ran = subprocess.run(drwatch_cmd("check", "--config", str(path), "--output", "json"), capture_output=True,
                         text=True, env=env, timeout=120, check=False)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    results = json.loads(ran.stdout)["results"]
    codes = {f["code"] for r in results for f in r["findings"]}
    assert "internal_error" not in codes and "no_credentials" in codes, results
    assert {r["outcome"] for r in results} == {"error"}
