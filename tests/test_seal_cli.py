"""`drwatch seal` on a local directory refuses clearly instead of failing with a traceback or sealing nothing:
an unreadable file or directory (exit 66), nothing but symlinks/FIFOs (exit 65), an unwritable seal (exit 73),
each with one line on stderr and no seal written. Entries that are not regular files are named in a warning,
and the seal lists exactly what the validators' walk verifies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from drwatch.storage.filesystem import MANIFEST_NAME, walk_sorted
from tests.support.helpers import drwatch_cmd, run_cli, write_tree

# Root without the capabilities that let it read any file: what a backup job running as a normal user sees.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
          "--inh-caps=-dac_override,-dac_read_search", "--"]


def seal_unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    prefix = NO_DAC if os.geteuid() == 0 else []
    assert not prefix or shutil.which("setpriv"), "needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE"
    return subprocess.run([*prefix, *drwatch_cmd("seal", *args)], capture_output=True, text=True, timeout=60,
                          check=False)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(MANIFEST_NAME) or
                  p.name.startswith(f".{MANIFEST_NAME}."))


@pytest.mark.parametrize("what", ["file", "directory"])
def test_an_unreadable_entry_is_one_error_line_exit_66_and_no_seal(tmp_path: Path, what: str) -> None:
    """A mode-000 file (or directory) under the recovery point: one line naming it and the reason, exit 66
    (EX_NOINPUT), no traceback, no seal or temporary file, an earlier seal left as it was, nothing on stdout."""
    root = write_tree(tmp_path / "rp", {"a.bin": b"a" * 10, "sub/secret.bin": b"s" * 10, "z.bin": b"z"})
    (root / MANIFEST_NAME).write_text("earlier seal\n")
    bad = root / "sub" / "secret.bin" if what == "file" else root / "sub"
    bad.chmod(0)
    try:
        for out in ([], ["--out", "-"]):
            proc = seal_unprivileged("--location-path", str(root), *out)
            assert proc.returncode == 66, proc.stderr
            assert proc.stderr.splitlines() == [f"drwatch seal: cannot read {bad}: Permission denied; nothing written"]
            assert proc.stdout == ""
            assert (root / MANIFEST_NAME).read_text() == "earlier seal\n"
            assert leftovers(root) == [MANIFEST_NAME]
    finally:
        bad.chmod(0o755)


def hf_snapshot(base: Path) -> Path:
    """A Hugging Face cache layout: the snapshot's files are symlinks into blobs/, plus a FIFO."""
    blobs = write_tree(base / "blobs", {"1f0e": b"{}", "9a7c": b"\0" * 64, "c4d2": b"tok"})
    snap = base / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for name, blob in (("config.json", "1f0e"), ("model.safetensors", "9a7c"), ("tokenizer.json", "c4d2")):
        (snap / name).symlink_to(Path("../../blobs") / blob)
    os.mkfifo(snap / "progress.fifo")
    assert blobs.is_dir()
    return snap


def test_a_directory_of_symlinks_and_fifos_is_refused_with_exit_65(tmp_path: Path) -> None:
    """A snapshot whose entries are all symlinks (and a FIFO) is not sealed as 0 objects: the skipped entries
    are counted and named, the refusal says why (its check would fail with empty_recovery_point), exit 65
    (EX_DATAERR), nothing written. Opening the FIFO would hang the seal; it is never opened."""
    snap = hf_snapshot(tmp_path / "hf")
    proc = run_cli("seal", "--location-path", str(snap), timeout=60)
    assert proc.returncode == 65, proc.stderr
    warning, refusal = proc.stderr.splitlines()
    assert warning.startswith(f"drwatch seal: warning: skipped 4 entries that are not regular files under {snap} "
                              "(1 fifo, 3 symlinks): config.json (symlink), model.safetensors (symlink), "
                              "progress.fifo (fifo), tokenizer.json (symlink)."), warning
    assert "regular files only" in warning and "cp -rL" in warning
    assert refusal == (f"drwatch seal: refusing to write a seal of 0 objects: every entry under {snap} was "
                       "skipped, and a recovery point without regular files fails its check "
                       "(empty_recovery_point); nothing written")
    assert leftovers(snap) == []
    assert run_cli("seal", "--location-path", str(snap), "--out", "-", timeout=60).stdout == ""


def test_skipped_entries_are_named_and_the_seal_matches_the_validators_walk(tmp_path: Path) -> None:
    """Regular files beside symlinks: the seal is written (exit 0) with the regular files only, exactly what
    the validators' walk lists, and a warning counts the skipped entries, naming the first five."""
    root = write_tree(tmp_path / "rp", {"data/a.bin": b"a" * 100, "data/b.bin": b"b" * 7, "top.txt": b"t"})
    for i in range(7):
        (root / "data" / f"link{i}").symlink_to("a.bin")
    (root / "dirlink").symlink_to("data", target_is_directory=True)
    proc = run_cli("seal", "--location-path", str(root), timeout=60)
    assert proc.returncode == 0, proc.stderr
    warning, done = proc.stderr.splitlines()
    assert "skipped 8 entries" in warning and "(8 symlinks)" in warning and warning.count("(symlink)") == 5
    assert ", and 3 more." in warning
    assert done == f"sealed 3 objects, 108 bytes -> {root / MANIFEST_NAME}"
    lines = (root / MANIFEST_NAME).read_text().splitlines()
    sealed = [json.loads(line)["path"] for line in lines[1:]]
    assert sealed == [e.key for e in walk_sorted(root)] == ["data/a.bin", "data/b.bin", "top.txt"]


def test_a_seal_that_cannot_be_written_is_exit_73(tmp_path: Path) -> None:
    """An --out path that cannot be created: one line, exit 73 (EX_CANTCREAT), no traceback."""
    root = write_tree(tmp_path / "rp", {"a.bin": b"a"})
    (tmp_path / "file").write_text("not a directory")
    proc = run_cli("seal", "--location-path", str(root), "--out", str(tmp_path / "file" / "seal.jsonl"), timeout=60)
    assert proc.returncode == 73, proc.stderr
    assert proc.stderr.splitlines() == [f"drwatch seal: cannot write {tmp_path / 'file' / 'seal.jsonl'}: "
                                        "File exists; nothing written"]  # its parent is a file
