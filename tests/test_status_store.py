"""`drwatch status` only reads a store: without one it says so and exits 69 (unavailable) instead of creating an
empty store (and its parent directories) and reporting every asset as never checked; an unreachable
PostgreSQL store is exit 69 too, as documented.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.helpers import basic_config, free_port, populate, run_cli, write_config


def test_status_without_a_sqlite_store_creates_nothing_and_exits_69(tmp_path: Path) -> None:
    """A store path whose file (and parent directories) do not exist: one line naming it, exit 69, nothing
    created."""
    missing = tmp_path / "nonexistent" / "d" / "x.sqlite"
    cfg = basic_config(tmp_path, store={"sqlite": str(missing)})
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    for output in ("table", "json"):
        proc = run_cli("status", "--config", str(path), "--output", output, timeout=60)
        assert proc.returncode == 69, proc.stderr
        assert proc.stderr.splitlines() == [
            f"drwatch status: no store at {missing}: drwatch has not run with this configuration"]
        assert proc.stdout == ""
    assert not (tmp_path / "nonexistent").exists()


def test_default_store_location_hint(tmp_path: Path) -> None:
    """Without `store.sqlite` and outside systemd the store is beside the config: the message says where the
    service keeps its own; with $STATE_DIRECTORY it looks there, and creates nothing either way."""
    cfg = basic_config(tmp_path)
    del cfg["store"]
    path = write_config(tmp_path / "etc" / "drwatch.yaml", cfg)
    proc = run_cli("status", "--config", str(path), env={"STATE_DIRECTORY": ""}, timeout=60)
    assert proc.returncode == 69, proc.stderr
    assert proc.stderr.strip() == (
        f"drwatch status: no store at {tmp_path / 'etc' / 'drwatch.sqlite'}: drwatch has not run with this "
        "configuration (the service keeps it in its state directory: run with STATE_DIRECTORY=/var/lib/drwatch, "
        "or set store.sqlite)")
    state = tmp_path / "state"
    state.mkdir()
    proc = run_cli("status", "--config", str(path), env={"STATE_DIRECTORY": str(state)}, timeout=60)
    assert proc.returncode == 69
    assert proc.stderr.strip() == (f"drwatch status: no store at {state / 'drwatch.sqlite'}: drwatch has not run "
                                   "with this configuration")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["drwatch.yaml", "etc", "state"]


def test_status_reads_the_store_check_created(tmp_path: Path) -> None:
    """Once `check` has written the store, `status` reads it (and exits with the compliance code, not 69)."""
    populate(tmp_path)
    path = write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path))
    assert run_cli("check", "--config", str(path), timeout=120).returncode in (0, 1)
    proc = run_cli("status", "--config", str(path), "--output", "json", timeout=60)
    assert proc.returncode in (0, 1) and '"results"' in proc.stdout, proc.stderr


def test_status_and_check_with_an_unreachable_postgres_store_exit_69(tmp_path: Path) -> None:
    """A PostgreSQL store nobody listens for: one line without the DSN's password, exit 69 (not 2, which
    means "a validator could not check"), for `status` and for `check` alike."""
    cfg = basic_config(tmp_path, store={"postgres": {"dsn_env": "DRWATCH_TEST_DSN", "connect_timeout": "5s"}})
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    dsn = f"postgresql://drwatch:s3cret-pw@127.0.0.1:{free_port()}/drwatch"
    proc = run_cli("status", "--config", str(path), env={"DRWATCH_TEST_DSN": dsn}, timeout=60)
    assert proc.returncode == 69, proc.stderr
    assert proc.stderr.splitlines() == [
        "drwatch status: cannot connect to the PostgreSQL store (ConnectionRefusedError)"]
    assert "s3cret-pw" not in proc.stderr + proc.stdout
    populate(tmp_path)
    proc = run_cli("check", "--config", str(path), env={"DRWATCH_TEST_DSN": dsn}, timeout=60)
    assert proc.returncode == 69, proc.stderr
    assert "cannot connect to the PostgreSQL store" in proc.stderr and "Traceback" not in proc.stderr
    assert "s3cret-pw" not in proc.stderr + proc.stdout
