"""Names from outside drwatch are escaped in every human output: a backup file named with a newline, an ANSI
escape, a carriage return and a right-to-left override cannot rewrite the operator's terminal or forge a row
of `drwatch check`/`status`, nor of seal's warning or a configuration error; JSON output keeps the exact
names. Real files, real `drwatch` subprocesses.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

from drwatch.core.textsafe import escape
from tests.support.helpers import basic_config, populate, run_cli, write_config

EVIL = "evil\n  data/replica: ok\x1b[31m\r\u202egpj.exe"  # a forged row, red from here, overtyped, reversed
EVIL_FILE = EVIL.replace("/", "|")  # a file name cannot hold a slash
EVIL_ESCAPED = escape(EVIL_FILE)
# What must never reach a terminal raw: C0 but newline, DEL, C1, bidi controls, line/paragraph separators.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def test_escape_writes_steering_characters_as_escapes() -> None:
    """C0/C1 controls, DEL, bidi controls, line separators and lone surrogates become escapes; printable text
    (other languages, backslashes, emoji) is left alone; escaping twice changes nothing more."""
    assert escape("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escape("\x1b[2J\x00\x7f\x85\x9b") == "\\x1b[2J\\x00\\x7f\\x85\\x9b"
    assert escape("\u202egpj.exe\u2066\u2069\u200f\u061c\u2028\u2029") == \
        "\\u202egpj.exe\\u2066\\u2069\\u200f\\u061c\\u2028\\u2029"
    assert escape(b"\xffname".decode("utf-8", "surrogateescape")) == "\\udcffname"
    plain = "Größe/données/データ/файл \\ 🦀 ~!@#$%^&*()"
    assert escape(plain) == plain
    assert escape(escape(EVIL)) == escape(EVIL)
    assert not RAW.search(escape("".join(map(chr, range(0x2100)))))


def _estate(tmp: Path) -> Path:
    """A missing file (in copy1) and an extra one (in copy1) named to attack the terminal."""
    populate(tmp)
    for where in ("prod", "copy2"):
        (tmp / where / "data" / EVIL_FILE).write_bytes(b"made by production")
    (tmp / "copy1" / "data" / (EVIL_FILE + "-extra")).write_bytes(b"stray")
    return write_config(tmp / "drwatch.yaml", basic_config(tmp))


def test_check_and_status_tables_escape_file_names_and_json_keeps_them(tmp_path: Path) -> None:
    """`drwatch check` and `drwatch status` print the missing and the extra file's names escaped: no raw
    control character in stdout, the escaped forms present, one line per finding (no forged row). The JSON
    output carries the exact names."""
    config = _estate(tmp_path)
    for command in ("check", "status"):
        proc = run_cli(command, "--config", str(config))
        assert proc.returncode == 1, proc.stderr
        assert not RAW.search(proc.stdout), repr(proc.stdout)
        assert not RAW.search(proc.stderr), repr(proc.stderr)
        missing = [line for line in proc.stdout.splitlines() if " missing_file " in line]
        extra = [line for line in proc.stdout.splitlines() if " extra_file " in line]
        assert len(missing) == 1 and f"[copy1:{EVIL_ESCAPED}]" in missing[0], proc.stdout
        assert len(extra) == 1 and f"[copy1:{EVIL_ESCAPED}-extra]" in extra[0], proc.stdout
        for form in ("\\n", "\\x1b[31m", "\\r", "\\u202e"):
            assert form in missing[0]
        assert not any(line.startswith("  data|replica") for line in proc.stdout.splitlines())

        doc = json.loads(run_cli(command, "--config", str(config), "--output", "json").stdout)
        subjects = {f["subject"] for r in doc["results"] for f in r["findings"]}
        assert f"copy1:{EVIL_FILE}" in subjects and f"copy1:{EVIL_FILE}-extra" in subjects, subjects


def test_a_file_name_that_is_not_utf8_is_printed_escaped(tmp_path: Path) -> None:
    """A file whose name is not valid UTF-8 (byte 0xff) is missing from copy1: the table shows it as
    ``\\udcff``, not as the raw byte (nor does `print` fail with UnicodeEncodeError under a strict locale)."""
    populate(tmp_path)
    config = write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path))
    for where in ("prod", "copy2"):
        with open(os.path.join(os.fsencode(tmp_path / where / "data"), b"\xffbad"), "wb") as f:
            f.write(b"made by production")
        # older than copy1's newest file: missing from it, not a copy still catching up (copy_behind)
        os.utime(os.path.join(os.fsencode(tmp_path / where / "data"), b"\xffbad"), (1e9, 1e9))
    proc = run_cli("check", "--config", str(config))
    assert proc.returncode == 1, proc.stderr
    assert "[copy1:\\udcffbad]" in proc.stdout and "Traceback" not in proc.stderr, proc.stdout + proc.stderr


def test_seal_warning_escapes_skipped_names(tmp_path: Path) -> None:
    """`drwatch seal` names the entries it skipped (here a symlink named to attack the terminal) escaped."""
    root = tmp_path / "rp"
    root.mkdir()
    (root / "real.bin").write_bytes(b"data")
    (root / EVIL_FILE).symlink_to(root / "real.bin")
    proc = run_cli("seal", "--location-path", str(root), "--out", str(tmp_path / "seal.jsonl"), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not RAW.search(proc.stderr), repr(proc.stderr)
    warning = [line for line in proc.stderr.splitlines() if "warning: skipped" in line]
    assert len(warning) == 1 and EVIL_ESCAPED in warning[0], proc.stderr


def test_configuration_errors_escape_what_the_file_says(tmp_path: Path) -> None:
    """A configuration whose asset name holds an escape sequence and a newline (YAML's double-quoted
    escapes) is refused with the name shown escaped."""
    populate(tmp_path)
    cfg = basic_config(tmp_path)
    cfg["assets"] = {"bad\x1b[2Jname\nforged": cfg["assets"]["data"]}
    proc = run_cli("check-config", str(write_config(tmp_path / "drwatch.yaml", cfg)))
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert not RAW.search(proc.stderr) and "\\x1b[2J" in proc.stderr and "\\nforged" in proc.stderr, proc.stderr


_CONSOLE_LOG = """
import logging, os, sys, structlog
from drwatch.core import logs
evil = sys.argv[1]
with os.fdopen(int(sys.argv[2]), "w") as tty:
    logs.configure("info", "auto", tty)  # a terminal: the console renderer
    structlog.get_logger("drwatch.test").warning("copy_problem " + evil, subject=evil, subjects=[evil])
    logging.getLogger("somelib").warning("stdlib says %s", evil)
"""


def test_console_log_lines_on_a_terminal_escape_names() -> None:
    """On a terminal the log is rendered for eyes (not JSON): a field holding a crafted file name is escaped,
    through structlog and through the stdlib bridge alike. The stream is a real pseudo-terminal."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-c", _CONSOLE_LOG, EVIL, str(slave)], pass_fds=(slave,),
                              capture_output=True, text=True, timeout=60, check=False)
        os.close(slave)
        slave = -1
        out = b""
        while select.select([master], [], [], 1)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the writer is gone
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0, proc.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.decode())  # the renderer's own colours
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    assert len(lines) == 2, lines
    assert all(escape(EVIL) in line for line in lines), lines
    assert not RAW.search(text.replace("\r\n", "\n")), repr(text)
