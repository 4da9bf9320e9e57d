"""The command line as an operator uses it: check, status, seal, attest, demo, exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.helpers import basic_config, populate, run_cli, write_config, write_tree


def _cfg(tmp: Path, **kw: object) -> Path:
    return write_config(tmp / "drwatch.yaml", basic_config(tmp, **kw))  # type: ignore[arg-type]


def test_version() -> None:
    """`drwatch --version` prints the version."""
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("drwatch ")


def test_check_compliant_exits_0_and_json_shape(tmp_path: Path) -> None:
    """Three verified copies on three declared sites... but one medium and one disk (the copies are observed on
    production's device: never off-site): media and offsite fail → exit 1; with media: 1, offsite: 0 → exit 0."""
    populate(tmp_path)
    cfg = basic_config(tmp_path)
    cfg["compliance"] = {"media": 1, "immutable": 0, "offsite": 0}
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    out = run_cli("check", "--config", str(path), "--output", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    asset = doc["assets"]["data"]
    assert asset["compliant"] is True
    assert set(asset["rules"]) == {"copies", "media", "offsite", "immutable", "restore_errors"}
    assert all(r["state"] == "pass" and r["detail"] for r in asset["rules"].values())
    [res] = doc["results"]
    assert {"asset", "validator", "outcome", "findings"} <= set(res)
    assert res["outcome"] == "ok"


def test_check_bad_backup_exits_1(tmp_path: Path) -> None:
    """A corrupted copy: exit 1 and the table names the finding."""
    files = populate(tmp_path)
    victim = tmp_path / "copy1" / "data" / sorted(files)[0]
    victim.write_bytes(b"\0" * victim.stat().st_size)
    out = run_cli("check", "--config", str(_cfg(tmp_path)))
    assert out.returncode == 1
    assert "content_mismatch" in out.stdout
    assert "FAIL" in out.stdout


def test_check_unreachable_exits_2(tmp_path: Path) -> None:
    """A copy location that is not mounted: nothing bad proven, but not checked either → exit 2."""
    populate(tmp_path, copies=1)
    cfg = basic_config(tmp_path)
    cfg["compliance"] = {"media": 1, "immutable": 0, "copies": 2}
    out = run_cli("check", "--config", str(write_config(tmp_path / "d.yaml", cfg)))
    assert out.returncode == 2, out.stdout
    assert "location_unavailable" in out.stdout


def test_check_bad_config_exits_78(tmp_path: Path) -> None:
    """An invalid config: exit 78 with the field path, nothing run."""
    cfg = basic_config(tmp_path)
    cfg["assets"]["data"]["copies"][0]["location"] = "vault"
    out = run_cli("check", "--config", str(write_config(tmp_path / "d.yaml", cfg)))
    assert out.returncode == 78
    assert "assets.data.copies[0].location: unknown location 'vault'" in out.stderr


def test_check_results_go_to_the_store_and_status_reads_them(tmp_path: Path) -> None:
    """`check` records results in the configured store; `status` shows them without running anything."""
    files = populate(tmp_path)
    path = _cfg(tmp_path)
    assert run_cli("check", "--config", str(path)).returncode == 1  # media/immutable fail by default
    (tmp_path / "copy1" / "data" / sorted(files)[0]).unlink()  # status must not notice: it runs nothing
    out = run_cli("status", "--config", str(path), "--output", "json")
    doc = json.loads(out.stdout)
    assert doc["results"][0]["outcome"] == "ok"
    assert doc["assets"]["data"]["rules"]["copies"]["state"] == "pass"


def test_status_survives_a_stored_recovery_point_no_calendar_holds(tmp_path: Path) -> None:
    """A result stored by an older drwatch from a seal dated in milliseconds (recovery point 1e12) or NaN:
    `status` still prints the whole report (that time shown as invalid) instead of a traceback."""
    import asyncio

    from drwatch.config.model import load_config
    from drwatch.core.model import Outcome, Result
    from drwatch.store import open_store

    populate(tmp_path)
    path = _cfg(tmp_path)

    async def store_results() -> None:
        store = open_store(load_config(path))
        await store.open()
        try:
            for i, rp in enumerate((1e12, float("nan"))):
                await store.record(Result(run_id=f"legacy{i}", asset="data", validator="replica", kind="replica",
                                          outcome=Outcome.OK, started_at=1.0 + i, finished_at=2.0 + i,
                                          recovery_point=rp))
        finally:
            await store.close()

    asyncio.run(store_results())
    for output in ("json", "table"):
        out = run_cli("status", "--config", str(path), "--output", output)
        assert "Traceback" not in out.stderr and out.stdout, out.stderr
    doc = json.loads(run_cli("status", "--config", str(path), "--output", "json").stdout)
    assert doc["assets"]["data"]


def test_check_selects_validator(tmp_path: Path) -> None:
    """--validator/--asset restrict what runs; an unmatched selection is a usage error."""
    populate(tmp_path)
    path = _cfg(tmp_path)
    out = run_cli("check", "--config", str(path), "--validator", "replica", "--output", "json")
    assert len(json.loads(out.stdout)["results"]) == 1
    assert run_cli("check", "--config", str(path), "--validator", "nope").returncode == 78


def test_check_asset_exits_on_the_selection_only(tmp_path: Path) -> None:
    """`check --asset good` answers for that asset only: another asset failing (its failure stored by an
    earlier full check) leaves the exit code 0; `check --asset bad` and a full check still exit 1."""
    files = populate(tmp_path)
    write_tree(tmp_path / "prod" / "bad", files)
    write_tree(tmp_path / "copy1" / "bad", {**files, sorted(files)[0]: b"corrupted"})
    write_tree(tmp_path / "copy2" / "bad", files)
    cfg = basic_config(tmp_path)
    cfg["compliance"] = {"media": 1, "immutable": 0, "offsite": 0}  # the copies share production's disk here
    bad = {**cfg["assets"]["data"], "production": {"location": "prod", "prefix": "bad"},
           "copies": [{"location": "copy1", "prefix": "bad"}, {"location": "copy2", "prefix": "bad"}]}
    cfg["assets"]["bad"] = bad
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    assert run_cli("check", "--config", str(path)).returncode == 1
    out = run_cli("check", "--config", str(path), "--asset", "data")
    assert out.returncode == 0, out.stdout + out.stderr
    assert run_cli("check", "--config", str(path), "--asset", "bad").returncode == 1
    assert run_cli("check", "--config", str(path)).returncode == 1


def test_seal_writes_manifest_and_reads_only(tmp_path: Path) -> None:
    """`drwatch seal` writes a manifest (default inside DIR, or --out / stdout) covering every file."""
    files = populate(tmp_path, copies=0)
    root = tmp_path / "prod" / "data"
    out = run_cli("seal", "--location-path", str(root), "--out", "-")
    lines = out.stdout.splitlines()
    head = json.loads(lines[0])
    assert head["files"] == len(files) == len(lines) - 1
    assert head["bytes"] == sum(len(v) for v in files.values())
    assert run_cli("seal", "--location-path", str(root)).returncode == 0
    assert (root / ".drwatch-manifest.jsonl").exists()


def test_seal_and_goldens_files_get_ordinary_permissions(tmp_path: Path) -> None:
    """A seal written by a backup job (another user than the drwatch service) must stay readable by drwatch:
    `drwatch seal` gives a new file 0666 less the umask (not mkstemp's 0600) and keeps the mode of a file it
    replaces; goldens are written the same way."""
    from drwatch.inference.goldens import Goldens, save

    populate(tmp_path, copies=0)
    root = tmp_path / "prod" / "data"
    seal_path = root / ".drwatch-manifest.jsonl"
    script = (
        "import os, sys; os.umask(int(sys.argv[1], 8)); from drwatch.cli.main import main; sys.exit(main(sys.argv[2:]))"
    )
    for umask, mode in (("022", 0o644), ("027", 0o640)):
        seal_path.unlink(missing_ok=True)
        done = subprocess.run([sys.executable, "-c", script, umask, "seal", "--location-path", str(root)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(seal_path.stat().st_mode) == mode, (umask, oct(seal_path.stat().st_mode))
    seal_path.chmod(0o604)  # chosen by the operator: a new seal over it keeps it
    assert run_cli("seal", "--location-path", str(root)).returncode == 0
    assert stat.S_IMODE(seal_path.stat().st_mode) == 0o604
    goldens = tmp_path / "goldens.json"
    save(goldens, Goldens(engine="sentence_transformers", seal_digest="sha256:" + "0" * 64, inputs=("a",),
                          outputs=([1.0],), recorded_at=1.0))
    assert stat.S_IMODE(goldens.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_attest_makes_offline_copy_count(tmp_path: Path) -> None:
    """An offline copy with a fresh attestation satisfies `immutable`; without one it fails."""
    populate(tmp_path, copies=1)
    cfg = basic_config(tmp_path)
    cfg["locations"]["copy2"]["offline"] = True
    cfg["locations"]["copy2"]["media"] = "tape"
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    out = run_cli("check", "--config", str(path), "--output", "json")
    assert json.loads(out.stdout)["assets"]["data"]["rules"]["immutable"]["state"] == "fail"
    att = run_cli("attest", "data", "copy2", "--note", "tape 7 restored by hand", "--config", str(path))
    assert att.returncode == 0, att.stderr
    out = run_cli("status", "--config", str(path), "--output", "json")
    rules = json.loads(out.stdout)["assets"]["data"]["rules"]
    assert rules["immutable"]["state"] == "pass"
    assert rules["media"]["state"] == "pass"  # disk + tape
    assert out.returncode == 0, rules
    bad = run_cli("attest", "data", "nope", "--note", "x", "--config", str(path))
    assert bad.returncode == 78
    future = run_cli("attest", "data", "copy2", "--note", "x", "--recovery-point", "2099-01-01T00:00:00Z",
                     "--config", str(path))
    assert future.returncode == 78 and "future" in future.stderr


def test_demo_estate_shows_compliant_and_failing_assets(tmp_path: Path) -> None:
    """`drwatch demo` builds an estate whose check shows one compliant asset and the planted faults."""
    demo = tmp_path / "demo"
    assert run_cli("demo", "--dir", str(demo)).returncode == 0
    cfg = yaml.safe_load((demo / "drwatch.yaml").read_text())
    assert cfg["store"]["sqlite"] == "state/drwatch.sqlite"
    out = run_cli("check", "--config", str(demo / "drwatch.yaml"), "--output", "json")
    doc = json.loads(out.stdout)
    assert out.returncode == 1
    states = {name: a["compliant"] for name, a in doc["assets"].items()}
    assert states == {"model-weights": True, "vector-index": False, "training-data": False,
                      "feature-store": False, "terraform-state": False}
    by_asset = {r["asset"]: r for r in doc["results"] if r["validator"] == "replica"}
    assert by_asset["vector-index"]["outcome"] == "failed"
    assert "content_mismatch" in {f["code"] for f in by_asset["vector-index"]["findings"]}
    assert "missing_file" in {f["code"] for f in by_asset["training-data"]["findings"]}
    assert "rpo_exceeded" in {f["code"] for f in by_asset["feature-store"]["findings"]}
    assert by_asset["terraform-state"]["outcome"] == "error"
    assert doc["assets"]["terraform-state"]["rules"]["copies"]["state"] == "unknown"
    # the index was embedded with the backed-up model, on the same day: the RAG pair restores consistently
    [group] = [r for r in doc["results"] if r["validator"] == "consistency_group"]
    assert group["outcome"] == "ok", group
    assert doc["consistency_groups"]["rag"]["state"] == "consistent"
    # refuses to clobber an existing demo without --force, and a foreign directory always
    assert run_cli("demo", "--dir", str(demo)).returncode != 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    assert run_cli("demo", "--dir", str(tmp_path / "mine"), "--force").returncode != 0
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep"


def test_check_config_warns_about_secrets_missing_here_and_speaks_json_when_invalid(tmp_path: Path) -> None:
    """check-config runs in an admin's shell, not the service's environment: a secret it cannot find (unset
    *_env variable, missing *_file) is a warning naming the field (exit 0), never the value; an invalid file
    with --output json also puts its problems on stdout as JSON (exit 78)."""
    populate(tmp_path)
    cfg = basic_config(tmp_path)
    cfg["store"] = {"postgres": {"dsn_env": "DRW_TEST_DSN_UNSET"}}
    path = write_config(tmp_path / "pg.yaml", cfg)
    env = {k: v for k, v in os.environ.items() if k != "DRW_TEST_DSN_UNSET"}
    done = subprocess.run([sys.executable, "-m", "drwatch", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "store.postgres.dsn_env: environment variable DRW_TEST_DSN_UNSET is not set here" in done.stderr
    cfg["store"] = {"postgres": {"dsn_file": "no-such-secret"}}
    done = run_cli("check-config", str(write_config(tmp_path / "pgf.yaml", cfg)))
    assert done.returncode == 0 and "store.postgres.dsn_file: secret file no-such-secret is not found" in done.stderr
    cfg["assets"]["data"]["production"]["location"] = "nowhere"
    bad = run_cli("check-config", str(write_config(tmp_path / "bad.yaml", cfg)), "--output", "json")
    assert bad.returncode == 78
    doc = json.loads(bad.stdout)
    assert doc["valid"] is False
    assert any(p["path"] == "assets.data.production.location" and "unknown location 'nowhere'" in p["message"]
               for p in doc["problems"]), doc
