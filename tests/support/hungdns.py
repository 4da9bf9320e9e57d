"""Run as ``unshare --map-root-user --mount --net python3 -m tests.support.hungdns OUT``: a private network (only
loopback) and mount namespace where ``/etc/resolv.conf`` names one name server on 127.0.0.1 that reads every
query and never answers (a real, hung resolver: ``getaddrinfo`` waits its full ``timeout``), then the
``recovery_dependencies`` validator probing names through it, twice, while the test watches the event loop's
default executor. Writes what it saw as JSON to OUT."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

DEAD_NAMES = 6  # more than the lookup threads (4): the rest must be refused, not queued
LOOKUP_TIMEOUT = 60  # resolv.conf timeout: the lookups stay hung for the whole test


def _isolate(tmp: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    conf = tmp / "resolv.conf"
    conf.write_text(f"nameserver 127.0.0.1\noptions timeout:{LOOKUP_TIMEOUT} attempts:1\n")
    subprocess.run(["mount", "--bind", str(conf), "/etc/resolv.conf"], check=True)


def _black_hole() -> None:
    """UDP and TCP port 53 on loopback: queries read, never answered."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 53))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 53))
    tcp.listen(64)
    held: list[socket.socket] = []

    def serve_udp() -> None:
        while True:
            udp.recvfrom(4096)

    def serve_tcp() -> None:
        while True:
            held.append(tcp.accept()[0])

    threading.Thread(target=serve_udp, daemon=True).start()
    threading.Thread(target=serve_tcp, daemon=True).start()


async def _default_executor_answers(within: float) -> float | None:
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.to_thread(lambda: None), within)
    except TimeoutError:
        return None
    return time.monotonic() - started


async def _main(tmp: Path) -> dict[str, Any]:
    from drwatch.validators.dependencies.lookups import LOOKUPS
    from tests.support.runs import open_runner
    from tests.support.s3helpers import parse

    # The daemon's default executor is small on a small host (min(32, cores + 4)): 4 threads here, as on a 1-core
    # VM, so that the outcome does not depend on the machine running the test.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(4))
    (tmp / "prod").mkdir()
    deps = [{"kind": "dns", "name": f"dns{i}", "host": f"db{i}.drwatch-hung.example", "timeout": "1s",
             "region": "eu-central-1"} for i in range(DEAD_NAMES)]
    deps.append({"kind": "tcp", "name": "registry", "host": "localhost", "port": 9, "timeout": "1s",
                 "region": "eu-central-1"})
    cfg = parse(tmp, {
        "store": {"sqlite": str(tmp / "state.sqlite")},
        "locations": {"prod": {"kind": "filesystem", "path": str(tmp / "prod"), "region": "eu-west-1"}},
        "assets": {"data": {"rpo": "1d", "production": {"location": "prod", "prefix": ""},
                            "validators": [{"kind": "recovery_dependencies", "dependencies": deps}]}}})
    runs = []
    async with open_runner(cfg, tmp / "sandboxes") as runner:
        for _ in range(2):
            started = time.monotonic()
            result = await runner.execute("data", cfg.assets["data"].validators[0])
            runs.append({"outcome": result.outcome.value, "seconds": time.monotonic() - started,
                         "findings": [[f.severity.value, f.code, f.subject, f.message] for f in result.findings],
                         "default_executor_seconds": await _default_executor_answers(5.0),
                         "lookups_waiting": LOOKUPS.waiting()})
    return {"runs": runs, "lookup_threads": sum(t.name.startswith("drwatch-lookup") for t in threading.enumerate())}


def main() -> None:
    out = Path(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="drwatch-hungdns-") as tmp:
        _isolate(Path(tmp))
        _black_hole()
        report = asyncio.run(_main(Path(tmp)))
    out.write_text(json.dumps(report))
    sys.stdout.flush()
    import os
    os._exit(0)  # the hung lookup threads would hold a normal exit for the resolver's whole timeout


if __name__ == "__main__":
    main()
