"""No configured secret value ever leaves drwatch: a scan of everything it writes or serves.

Every kind of secret drwatch accepts is configured with a unique, recognisable value: S3 keys through the
environment, through absolute ``*_file`` paths and through ``$CREDENTIALS_DIRECTORY``; PostgreSQL DSN
passwords (URL and key=value forms, a working server, a stopped one and a malformed DSN); RDS keys; the
basic-auth password and the TLS private key of the web endpoints. Real flows then run against real servers
(moto, PostgreSQL): ``check-config``, ``check --output json``, the daemon at debug level with its results,
failed logins, a reload, ``/metrics`` and ``/api/v1/status`` over HTTPS, ``status --output json``, the
SQLite store's tables, and the error output of bad configurations. None of the values may appear anywhere.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import sqlite3
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from tests.support.helpers import DaemonProcess, free_port, read_json_lines, run_cli, write_config, write_tree
from tests.support.pgserver import PostgresServer
from tests.support.s3helpers import bucket, upload
from tests.support.s3servers import MotoServer
from tests.test_web_security import ScratchCA, bcrypt_hash

FILES = {f"part-{i}.bin": os.urandom(512 + i) for i in range(4)}
VALIDATORS = {("s3data", "replica"), ("db", "lag-file"), ("db", "lag-down"), ("db", "lag-baddsn"),
              ("db", "lag-badport"), ("db", "lag-kv"), ("db", "rds")}


def token(label: str) -> str:
    """A value that cannot occur by chance: a label (to name it in a failure) and 96 random bits."""
    return f"{label}{secrets.token_hex(12)}"


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


class Secrets:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def new(self, name: str, prefix: str = "") -> str:
        self.values[name] = value = prefix + token(name.replace("_", "") + "X")
        return value


def https_get(url: str, ctx: ssl.SSLContext, user: str, password: str, method: str = "GET") -> tuple[int, str]:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"Basic {auth}"},
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def dump_sqlite(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return "\n".join(db.iterdump())


def find_leaks(values: dict[str, str], outputs: dict[str, str]) -> list[str]:
    leaks = []
    for where, text in outputs.items():
        for name, value in values.items():
            for form in {value, quote(value, safe=""), value[len(value) // 2:]}:  # also a tail of 12+ chars
                if form in text:
                    leaks.append(f"{name} in {where}")
    return leaks


def test_no_secret_value_appears_anywhere(tmp_path: Path, moto: MotoServer, pg_server: PostgresServer) -> None:
    """The scan: every output of every flow, searched for every configured secret value (whole, URL-quoted
    and its second half). The flows are checked to have really happened (results for every validator, the
    expected outcomes, refused logins), so that an empty output cannot pass the scan."""
    sec = Secrets()
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    secret_dir = tmp_path / "secret-files"
    secret_dir.mkdir(mode=0o700)
    env: dict[str, str] = {"CREDENTIALS_DIRECTORY": str(creds)}

    def env_secret(var: str, value: str) -> str:
        env[var] = value
        return var

    def file_secret(directory: Path, name: str, value: str) -> str:
        path = directory / name
        path.write_text(value + "\n")
        path.chmod(0o600)
        return name if directory == creds else str(path)

    # S3: production keys by environment, one copy by absolute files, one through $CREDENTIALS_DIRECTORY,
    # one copy on an endpoint that is down (its keys by environment).
    prod_b, copy_b, cred_b = bucket(moto, "scanprod"), bucket(moto, "scancopy"), bucket(moto, "scancred")
    for name in (prod_b, copy_b, cred_b):
        upload(moto, name, FILES)
    s3_common = {"kind": "s3", "endpoint_url": moto.endpoint_url, "region": "us-east-1", "addressing_style": "path",
                 "max_attempts": 1, "connect_timeout": "2s", "read_timeout": "10s"}
    locations: dict[str, Any] = {
        "prod-s3": {**s3_common, "bucket": prod_b, "site": "dc-a",
                    "access_key_id_env": env_secret("SCAN_AK", sec.new("s3_key_env", "AKIA")),
                    "secret_access_key_env": env_secret("SCAN_SK", sec.new("s3_secret_env", "wJ/+"))},
        "copy-file": {**s3_common, "bucket": copy_b, "site": "dc-b",
                      "access_key_id_file": file_secret(secret_dir, "ak", sec.new("s3_key_file", "AKIA")),
                      "secret_access_key_file": file_secret(secret_dir, "sk", sec.new("s3_secret_file"))},
        "copy-cred": {**s3_common, "bucket": cred_b, "site": "dc-c",
                      "access_key_id_file": file_secret(creds, "drwatch-s3-ak", sec.new("s3_key_cred", "AKIA")),
                      "secret_access_key_file": file_secret(creds, "drwatch-s3-sk", sec.new("s3_secret_cred"))},
        "copy-down": {**s3_common, "bucket": "gone-bucket", "site": "dc-d",
                      "endpoint_url": f"http://127.0.0.1:{closed_port()}",
                      "access_key_id_env": env_secret("SCAN_AK_DOWN", sec.new("s3_key_down", "AKIA")),
                      "secret_access_key_env": env_secret("SCAN_SK_DOWN", sec.new("s3_secret_down"))},
        "fs": {"kind": "filesystem", "path": str(tmp_path / "fs"), "site": "dc-a"},
    }
    write_tree(tmp_path / "fs" / "db", {"placeholder": b"x"})

    # PostgreSQL DSNs with passwords: a working server (a primary: "not a standby"), a stopped one, a
    # malformed DSN, and the key=value form naming a database that does not exist.
    pg_server.psql(f"CREATE ROLE scan_user LOGIN PASSWORD '{sec.new('pg_role_password')}'")
    dsn_ok = f"postgresql://scan_user:{sec.new('pg_password_file')}@{pg_server.host}:{pg_server.port}/postgres"
    dsn_down = f"postgresql://scan_user:{sec.new('pg_password_down')}@127.0.0.1:{closed_port()}/postgres"
    dsn_bad = f"postgresql://scan_user:{sec.new('pg_password_bad')}@[::1/postgres"
    dsn_badport = f"postgresql://scan_user:{sec.new('pg_password_badport')}@127.0.0.1:notaport/postgres"
    dsn_kv = (f"host={pg_server.host} port={pg_server.port} user=scan_user "
              f"password={sec.new('pg_password_kv')} dbname=no_such_db")
    every = {"schedule": {"every": "2s"}, "timeout": "20s"}
    validators = [
        {"kind": "postgres_replica_lag", "name": "lag-file", **every,
         "dsn_file": file_secret(creds, "drwatch-standby-dsn", dsn_ok)},
        {"kind": "postgres_replica_lag", "name": "lag-down", **every, "dsn_env": env_secret("SCAN_DSN_DOWN", dsn_down)},
        {"kind": "postgres_replica_lag", "name": "lag-baddsn", **every, "dsn_env": env_secret("SCAN_DSN_BAD", dsn_bad)},
        {"kind": "postgres_replica_lag", "name": "lag-badport", **every,
         "dsn_env": env_secret("SCAN_DSN_BADPORT", dsn_badport)},
        {"kind": "postgres_replica_lag", "name": "lag-kv", **every, "dsn_env": env_secret("SCAN_DSN_KV", dsn_kv)},
        {"kind": "rds_snapshot", "name": "rds", **every, "instance": "no-such-instance", "region": "us-east-1",
         "endpoint_url": moto.endpoint_url, "max_attempts": 1,
         "access_key_id_env": env_secret("SCAN_RDS_AK", sec.new("rds_key", "AKIA")),
         "secret_access_key_env": env_secret("SCAN_RDS_SK", sec.new("rds_secret"))},
    ]

    # The web endpoints: TLS (its private key is a secret) and basic auth (the plain password is a secret).
    ca = ScratchCA(tmp_path / "pki", "scan")
    server = ca.server()
    password, wrong = sec.new("basic_auth_password"), sec.new("basic_auth_wrong_password")
    key_lines = [ln for ln in server.key.read_text().splitlines() if ln and not ln.startswith("-----")]
    for i, line in enumerate(key_lines):
        sec.values[f"tls_key_line{i}"] = line
    web = tmp_path / "pki" / "web.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": server.cert.name, "key_file": server.key.name},
                                   "basic_auth_users": {"prometheus": bcrypt_hash(password)}}))
    web.chmod(0o600)

    port = free_port()
    cfg = {
        "store": {"sqlite": str(tmp_path / "state.sqlite")},
        "http": {"listen": f"127.0.0.1:{port}", "web_config_file": str(web)},
        "logging": {"level": "debug", "format": "json"},
        "locations": locations,
        "assets": {
            "s3data": {"rpo": "7d", "production": {"location": "prod-s3", "prefix": "data"},
                       "copies": [{"location": loc, "prefix": "data"}
                                  for loc in ("copy-file", "copy-cred", "copy-down")],
                       "validators": [{"kind": "replica", **every}]},
            "db": {"rpo": "1h", "production": {"location": "fs", "prefix": "db"}, "validators": validators},
        },
    }
    config = write_config(tmp_path / "drwatch.yaml", cfg)
    outputs: dict[str, str] = {}

    def cli(label: str, *args: str) -> Any:
        result = run_cli(*args, env=env)
        outputs[f"{label} stdout"], outputs[f"{label} stderr"] = result.stdout, result.stderr
        return result

    assert cli("check-config", "check-config", str(config)).returncode == 0
    assert cli("check-config json", "check-config", str(config), "--output", "json").returncode == 0
    check = cli("check json", "check", "--config", str(config), "--output", "json", "--verbose")
    assert check.returncode == 1, check.stderr  # the RDS instance has no snapshot: failed
    doc = json.loads(check.stdout)
    outcomes = {(r["asset"], r["validator"]): r["outcome"] for r in doc["results"]}
    assert set(outcomes) == VALIDATORS
    assert outcomes[("db", "lag-down")] == outcomes[("db", "lag-baddsn")] == outcomes[("db", "lag-badport")] \
        == outcomes[("db", "lag-kv")] == "error"
    assert outcomes[("db", "rds")] == "failed" and outcomes[("s3data", "replica")] == "error"  # copy-down
    assert outcomes[("db", "lag-file")] == "error"  # connected for real: the server is a primary
    codes = {f["code"] for r in doc["results"] for f in r["findings"]}
    assert "dsn_invalid" in codes, codes

    # The daemon at debug level, with TLS + basic auth: results, refused logins, a reload.
    daemon = DaemonProcess(config, port, env=env)
    daemon.start(wait_ready=False)
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        status_doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
            try:
                code, body = https_get(f"{url}/api/v1/status", ctx, "prometheus", password)
            except OSError:
                time.sleep(0.2)
                continue
            status_doc = json.loads(body) if code == 200 else {}
            started = daemon.log().count('"run_finished"')
            if code == 200 and started >= 2 * len(VALIDATORS):
                break
            time.sleep(0.5)
        assert {(r["asset"], r["validator"]) for r in status_doc.get("results", [])} == VALIDATORS
        for attempt in range(3):
            assert https_get(f"{url}/metrics", ctx, "prometheus", wrong + str(attempt))[0] == 401
        assert https_get(f"{url}/metrics", ctx, password, password)[0] == 401  # the password as a user name
        code, outputs["/metrics"] = https_get(f"{url}/metrics", ctx, "prometheus", password)
        assert code == 200 and "drwatch_validator_outcome" in outputs["/metrics"]
        code, outputs["/api/v1/status"] = https_get(f"{url}/api/v1/status", ctx, "prometheus", password)
        assert code == 200
        assert https_get(f"{url}/-/reload", ctx, "prometheus", password, "POST")[0] == 200
        daemon.signal(signal.SIGHUP)
        daemon.wait_for(lambda: daemon.log().count('"reload_applied"') >= 2)
    finally:
        assert daemon.stop() == 0
    outputs["daemon log"] = log = daemon.log()
    events = {e.get("event") for e in read_json_lines(log)}
    assert {"run_finished", "listening", "reload_applied"} <= events, events

    cli("status json", "status", "--config", str(config), "--output", "json")
    cli("status table", "status", "--config", str(config))
    outputs["sqlite store"] = dump_sqlite(tmp_path / "state.sqlite")
    assert "dsn_invalid" in outputs["sqlite store"]

    # Bad configurations: a DSN and a key pasted where a reference belongs, a plain password where a bcrypt
    # hash belongs, a missing environment variable.
    bad = yaml.safe_load(config.read_text())
    bad["assets"]["db"]["validators"][1]["dsn_env"] = dsn_down
    bad["locations"]["prod-s3"]["secret_access_key_env"] = sec.values["s3_secret_env"]
    cli("bad config", "check-config", str(write_config(tmp_path / "bad.yaml", bad)))
    bad_web = tmp_path / "pki" / "bad-web.yml"
    bad_web.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": password}}))
    bad = yaml.safe_load(config.read_text())
    bad["http"]["web_config_file"] = str(bad_web)
    assert cli("bad web config", "check-config", str(write_config(tmp_path / "bad-web.yaml", bad))).returncode == 78
    assert "basic_auth_users" in outputs["bad web config stderr"]
    missing = {k: v for k, v in env.items() if k != "SCAN_SK"}
    result = run_cli("check", "--config", str(config), "--asset", "s3data", "--output", "json", env=missing)
    outputs["check, variable missing"] = result.stdout + result.stderr
    assert "SCAN_SK is not set" in outputs["check, variable missing"]
    assert outputs["bad config stderr"].count("not the secret itself") == 2

    # Every output is non-empty where it must be, then the scan.
    assert all(outputs[k] for k in ("check json stdout", "status json stdout", "daemon log", "/metrics",
                                    "/api/v1/status", "sqlite store", "check-config json stdout"))
    # Positive control: the scan finds a configured value that is not secret (an environment variable's
    # name, printed by check-config --output json), so an empty result means no leak, not a broken scan.
    assert "SCAN_DSN_DOWN in check-config json stdout" in find_leaks({"SCAN_DSN_DOWN": "SCAN_DSN_DOWN"}, outputs)
    leaks = find_leaks(sec.values, outputs)
    assert not leaks, leaks


def test_world_readable_secret_files_are_warned_about(tmp_path: Path) -> None:
    """A ``*_file`` secret readable by every user (one in $CREDENTIALS_DIRECTORY, mode 0644; one by absolute
    path, mode 0604) is a warning of `check-config` (which still exits 0) and of the daemon's log; once they
    are 0600 there is no warning."""
    creds = tmp_path / "creds"
    creds.mkdir()
    dsn, absolute = creds / "dsn", tmp_path / "sk"
    dsn.write_text("postgresql://u:p@127.0.0.1:1/db\n")
    absolute.write_text("secret\n")
    dsn.chmod(0o644)
    absolute.chmod(0o604)
    write_tree(tmp_path / "fs", {"x": b"x"})
    port = free_port()
    config = write_config(tmp_path / "drwatch.yaml", {
        "store": {"sqlite": str(tmp_path / "state.sqlite")},
        "http": {"listen": f"127.0.0.1:{port}"},
        "locations": {"fs": {"kind": "filesystem", "path": str(tmp_path / "fs")},
                      "s3": {"kind": "s3", "bucket": "bucket", "endpoint_url": "http://127.0.0.1:1",
                             "access_key_id_env": "X_AK", "secret_access_key_file": str(absolute)}},
        "assets": {"a": {"rpo": "1d", "production": {"location": "fs"}, "validators": [
            {"kind": "postgres_replica_lag", "dsn_file": "dsn", "schedule": {"every": "1h"}}]}},
    })
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    field = "assets.a.validators[0].dsn_file"
    daemon = DaemonProcess(config, port, env=env)
    daemon.start()
    try:
        warnings = [e for e in read_json_lines(daemon.log()) if e.get("event") == "secret_file_readable_by_others"]
    finally:
        assert daemon.stop() == 0
    assert sorted(e["problem"].split(":")[0] for e in warnings) == [field, "locations.s3.secret_access_key_file"]
    result = run_cli("check-config", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert f"warning: {field}: {dsn} is readable by every user on this host (mode 0644)" in result.stderr
    assert f"warning: locations.s3.secret_access_key_file: {absolute} is readable by every user on this host " \
           "(mode 0604)" in result.stderr
    dsn.chmod(0o600)
    absolute.chmod(0o600)
    result = run_cli("check-config", str(config), env={**env, "X_AK": "an-access-key-id"})
    assert result.returncode == 0 and "warning" not in result.stderr  # (X_AK set: no "not set here" warning)
