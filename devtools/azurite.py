"""Starts Azurite (npm ``azurite`` 3.35.0 from ``node_modules``) on free loopback ports, and stops it.

By default one process serves blobs, queues and tables. ``separate_services=True`` starts one process per
service (Azurite's ``azurite-blob``, ``azurite-queue`` and ``azurite-table``), as Azure's storage services
are separate front ends: the benchmark uses it so that a table holding a million entities, whose
persistence pauses Node's one event loop, does not stall the callback queue's writes.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / "node_modules" / ".bin"
AZURITE_BIN = BIN / "azurite"
# Azurite's documented development account (public, not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass
class Azurite:
    processes: list[subprocess.Popen[bytes]]
    blob_port: int
    queue_port: int
    table_port: int
    workspace: Path
    _own_workspace: bool = field(default=True, repr=False)
    separate_services: bool = False

    @property
    def connection_string(self) -> str:
        host = "http://127.0.0.1"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={host}:{self.blob_port}/{ACCOUNT};QueueEndpoint={host}:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint={host}:{self.table_port}/{ACCOUNT};"
        )

    def restart(self) -> Azurite:
        """Stop and start again on the same ports with the same workspace (data persists)."""
        self.stop(keep_workspace=True)
        return start_azurite(self.workspace, ports=(self.blob_port, self.queue_port, self.table_port),
                             separate_services=self.separate_services)

    def stop(self, *, keep_workspace: bool = False) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._own_workspace and not keep_workspace:
            shutil.rmtree(self.workspace, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _commands(workspace: Path, ports: list[int], separate_services: bool, in_memory: bool) -> list[list[str]]:
    common = ["--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
              *(["--inMemoryPersistence"] if in_memory else ["--location", str(workspace)])]
    services = list(zip(("blob", "queue", "table"), ports, strict=True))
    if separate_services:
        return [[str(BIN / f"azurite-{name}"), *common, f"--{name}Host", "127.0.0.1", f"--{name}Port", str(port)]
                for name, port in services]
    return [[str(AZURITE_BIN), *common,
             *(arg for name, port in services for arg in (f"--{name}Host", "127.0.0.1", f"--{name}Port", str(port)))]]


def start_azurite(workspace: Path | None = None, *, timeout_s: float = 30.0,
                  ports: tuple[int, int, int] | None = None, separate_services: bool = False,
                  in_memory: bool = False) -> Azurite:
    """Start Azurite with persistence in ``workspace`` (a new temporary folder by default).

    ``ports`` (blob, queue, table) restarts an Azurite where a stopped one listened, so clients keep
    their endpoints; otherwise free ports are picked. ``separate_services``: one process per service.
    """
    if not AZURITE_BIN.exists():
        raise RuntimeError(f"{AZURITE_BIN} is missing: run ./dev setup (npm ci installs azurite 3.35.0)")
    own = workspace is None
    workspace = workspace or Path(tempfile.mkdtemp(prefix="azurite-"))
    for _ in range(3):  # a port picked free can be taken before Azurite binds it: try again
        chosen = list(ports) if ports else [free_port() for _ in range(3)]
        processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                     for command in _commands(workspace, chosen, separate_services, in_memory)]
        deadline = time.monotonic() + timeout_s
        if all(_wait_listening(port, deadline) for port in chosen):
            return Azurite(processes, chosen[0], chosen[1], chosen[2], workspace=workspace, _own_workspace=own,
                           separate_services=separate_services)
        for process in processes:
            process.kill()
            process.wait()
    raise RuntimeError("Azurite did not start listening on its ports")
