"""Starts Azurite (npm ``azurite`` 3.35.0 from ``node_modules``) on free loopback ports, and stops it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AZURITE_BIN = REPO / "node_modules" / ".bin" / "azurite"
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
    process: subprocess.Popen[bytes]
    blob_port: int
    queue_port: int
    table_port: int
    workspace: Path
    _own_workspace: bool = field(default=True, repr=False)

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
        return start_azurite(self.workspace, ports=(self.blob_port, self.queue_port, self.table_port))

    def stop(self, *, keep_workspace: bool = False) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._own_workspace and not keep_workspace:
            shutil.rmtree(self.workspace, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_azurite(workspace: Path | None = None, *, timeout_s: float = 30.0,
                  ports: tuple[int, int, int] | None = None) -> Azurite:
    """Start Azurite with persistence in ``workspace`` (a new temporary folder by default).

    ``ports`` (blob, queue, table) restarts an Azurite where a stopped one listened, so clients keep
    their endpoints; otherwise free ports are picked.
    """
    if not AZURITE_BIN.exists():
        raise RuntimeError(f"{AZURITE_BIN} is missing: run ./dev setup (npm ci installs azurite 3.35.0)")
    own = workspace is None
    workspace = workspace or Path(tempfile.mkdtemp(prefix="azurite-"))
    for _ in range(3):  # a port picked free can be taken before Azurite binds it: try again
        chosen = list(ports) if ports else [free_port() for _ in range(3)]
        process = subprocess.Popen(
            [str(AZURITE_BIN), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
             "--location", str(workspace), "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1",
             "--tableHost", "127.0.0.1", "--blobPort", str(chosen[0]), "--queuePort", str(chosen[1]),
             "--tablePort", str(chosen[2])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        if all(_wait_listening(port, deadline) for port in chosen):
            return Azurite(process, chosen[0], chosen[1], chosen[2], workspace=workspace, _own_workspace=own)
        process.kill()
        process.wait()
    raise RuntimeError("Azurite did not start listening on its ports")
