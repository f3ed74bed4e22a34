"""``python -m emulators.dataverse --port 8801``: run the Dataverse emulator alone."""

from __future__ import annotations

import argparse
import sys

from emulators.common.server import run_cli
from emulators.common.throttling import add_cli_arguments, from_cli_arguments

from .server import DataverseServer


def main(argv: list[str] | None = None) -> int:
    # Service-protection flags (--service-protection, --sp-*, --bulk-max-payload-bytes) are
    # parsed here; --port/--verbose go on to run_cli.
    parser = argparse.ArgumentParser(add_help=False)
    add_cli_arguments(parser)
    parser.add_argument("--bulk-max-payload-bytes", type=int, default=None)
    extra, rest = parser.parse_known_args(list(argv) if argv is not None else sys.argv[1:])
    protection = from_cli_arguments(extra)
    return run_cli(
        lambda port: DataverseServer(
            port, service_protection=protection, bulk_max_payload_bytes=extra.bulk_max_payload_bytes
        ),
        rest,
        prog="python -m emulators.dataverse",
        description="Dataverse Web API emulator (Web API root: <url>/api/data/v9.2/).",
    )


if __name__ == "__main__":
    sys.exit(main())
