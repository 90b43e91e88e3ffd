"""`benefits serve` as a child process, for tests that signal or kill the server."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from service.serve_command import serve_command
from testkit.paths import REPO_ROOT, RULES_DIR

STARTUP_SECONDS = 60.0
LISTENING = re.compile(r"listening on \S+:(\d+)$")  # 127.0.0.1, 0.0.0.0, [::]


class ServerProcess:
    """A `benefits serve` child with its stdout read line by line on a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern.pattern!r}; saw {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"server exited ({self.proc.poll()}) before {pattern.pattern!r}; saw {self.seen}")
            self.seen.append(line)
            match = pattern.search(line)
            if match:
                return match

    def join(self) -> None:
        self._reader.join(timeout=10)


@contextmanager
def server_process(
    db_url: str, auth_file: Path, log_file: Path, *extra: str, rules_dir: Path = RULES_DIR
) -> Iterator[tuple[ServerProcess, int]]:
    """Start `benefits serve` on a free loopback port (on the repository's policies unless
    `rules_dir` says otherwise); yields the child and its port, and kills it afterwards if it is
    still running."""
    command = serve_command(db_url, rules_dir, auth_file, "--listen", "127.0.0.1:0", *extra)
    with (
        open(log_file, "a", encoding="utf-8") as log,
        subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True, encoding="utf-8"
        ) as proc,
    ):
        child = ServerProcess(proc)
        try:
            port = int(child.wait_for(LISTENING, STARTUP_SECONDS).group(1))
            yield child, port
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            child.join()
