"""What the gRPC benchmarks (bench_api.py, load_run.py) share: the synthetic registry cached
under var/bench/, the policies in force, and the server as a real child process
(`python -m service.cli serve`) with its CPU time and resident memory read from /proc."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:  # grpc is imported where it is used
    import grpc
    from grpc_health.v1 import health_pb2

    class Health(Protocol):
        """HealthStub as it is at run time: its stub (types-grpcio-health-checking) declares no methods."""

        Check: grpc.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]


REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = REPO_ROOT / "var" / "bench"
RULES_DIR = REPO_ROOT / "rules"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# The registry, cached under var/bench/.
def cached_feed(count: int, seed: int) -> Path:
    """The JSON Lines feed of `count` synthetic units (seed `seed`), written once."""
    from bench_registry import write_feed

    CACHE.mkdir(parents=True, exist_ok=True)
    feed = CACHE / f"registry-{count}-{seed}.jsonl"
    if not feed.exists():
        started = time.perf_counter()
        records = write_feed(feed, count, seed)
        print(
            f"registry: wrote {records:,} records for {count:,} units to {feed} "
            f"in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    return feed


def prepare_registry(count: int, seed: int) -> tuple[str, list[str]]:
    """The SQLite URL of a loaded synthetic registry (cached), and the USCCs of its enterprises."""
    from bench_registry import load_feed

    feed = cached_feed(count, seed)
    db, marker = feed.with_suffix(".db"), feed.with_suffix(".loaded")
    url = f"sqlite:///{db}"
    if not marker.exists():
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            path.unlink(missing_ok=True)
        report = load_feed(url, feed)
        marker.touch()
        print(f"registry: loaded {report.records:,} records into {db} in {report.seconds:.1f} s", flush=True)
    else:
        print(f"registry: reusing {db} (delete {marker.name} to rebuild)", flush=True)
    return url, registry_usccs(url)


def registry_usccs(url: str) -> list[str]:
    """The USCC of every enterprise stored at `url`."""
    from sqlalchemy import text

    from enterprise_registry.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(text("select uscc from enterprise order by uscc"))]
    finally:
        engine.dispose()


def policies_in_force(period: int) -> list[str]:
    from rules.loader import load_policy_dir
    from service.catalogue import CATALOGUE

    return sorted(p.id for p in load_policy_dir(RULES_DIR, CATALOGUE) if p.covers(period))


# ---------------------------------------------------------------------------------------------
# The server, in its own process.
class ServerProcess:
    """`benefits serve` on 127.0.0.1 (a free port), its output in `log_path`; `target` is where
    it listens once started."""

    def __init__(
        self, db_url: str, auth_file: Path, workers: int, *extra: str, log_path: Path = CACHE / "server.log"
    ) -> None:
        from service.serve_command import serve_command

        self.log_path = log_path
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            serve_command(db_url, RULES_DIR, auth_file, "--listen", "127.0.0.1:0", "--workers", str(workers), *extra),
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.target = self._wait_listening()

    def _wait_listening(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("listening on "):
                    return line.removeprefix("listening on ").strip()
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not start; see {self.log_path}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def rss_kib(self) -> int | None:
        """The server's resident set size now (VmRSS of /proc/<pid>/status), in KiB."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None

    def stop(self) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL after 20 s); its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def own_cpu() -> float:
    """CPU seconds of this process so far, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_serving(target: str, timeout: float = 30.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(target)
    try:
        stub = cast("Health", health_pb2_grpc.HealthStub(channel))
        deadline = time.monotonic() + timeout
        while True:
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
    finally:
        channel.close()
