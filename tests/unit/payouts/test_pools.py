"""Worker processes end with their server, also when the server died while they were starting."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_a_worker_whose_server_is_already_gone_ends_at_once() -> None:
    # The server's pid is handed over; a worker that starts after the server died (reparented
    # already) must not wait for a parent change that happened before it looked.
    started = time.monotonic()
    worker = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time\nfrom service.payouts.pools import _die_with_parent\n"
            "_die_with_parent(1 << 22)\ntime.sleep(30)\n",
        ],
        cwd=REPO_ROOT,
        timeout=20,
        check=False,
    )
    assert worker.returncode == 1
    assert time.monotonic() - started < 15


def test_a_worker_whose_server_lives_keeps_running() -> None:
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, time\nfrom service.payouts.pools import _die_with_parent\n"
            "_die_with_parent(os.getppid())\ntime.sleep(1.5)\n",
        ],
        cwd=REPO_ROOT,
    )
    assert worker.wait(timeout=20) == 0, "the worker was ended although its server lives"
