"""``python -m emulators.dataverse --port 8801``: run the Dataverse emulator alone."""

from __future__ import annotations

import sys

from emulators.common.server import run_cli

from .server import DataverseServer


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        lambda port: DataverseServer(port),
        argv,
        prog="python -m emulators.dataverse",
        description="Dataverse Web API emulator (Web API root: <url>/api/data/v9.2/).",
    )


if __name__ == "__main__":
    sys.exit(main())
