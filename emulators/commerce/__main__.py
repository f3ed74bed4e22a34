"""Run the Commerce emulator alone: ``python -m emulators.commerce --port 8802 --cards 1000``.

Prints the base URL (the OData service root is ``<url>/data/``) and serves until Ctrl-C.
``--port`` and ``--verbose`` are forwarded to ``emulators.common.server.run_cli``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from emulators.common.server import run_cli
from emulators.common.throttling import add_cli_arguments, from_cli_arguments

from .query import MAX_PAGE_SIZE
from .server import CommerceEmulator


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.commerce",
                                     description="Commerce HQ / F&O OData emulator with business events")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 = any free port)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument("--cards", type=int, default=1000)
    parser.add_argument("--reward-points", type=int, default=20)
    parser.add_argument("--levels-per-company", type=int, default=4)
    parser.add_argument("--companies", default="usmf,usrt,demf", help="comma-separated dataAreaIds")
    parser.add_argument("--default-company", default="usmf")
    parser.add_argument("--page-size", type=int, default=MAX_PAGE_SIZE)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lines", type=int, default=-1,
                        help="reward-point transaction lines in all (-1: eight per card)")
    parser.add_argument("--as-of", default="2026-12-01", help="the generated history's last day; the clock's start")
    parser.add_argument("--never-expires", default="1900-01-01T00:00:00Z",
                        help="ExpirationDate of never-expiring points (inferred: match the app's setting)")
    parser.add_argument("--open-valid-to", default="1900-01-01T00:00:00Z", help="ValidTo of an open card tier")
    parser.add_argument("--event-timeout", type=float, default=10.0, help="business-event HTTP timeout (s)")
    parser.add_argument("--event-retries", type=int, default=3)
    parser.add_argument("--event-retry-wait", type=float, default=1.0)
    add_cli_arguments(parser)
    args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    forwarded = ["--port", str(args.port)] + (["--verbose"] if args.verbose else [])

    def build(port: int) -> CommerceEmulator:
        return CommerceEmulator(
            port,
            cards=args.cards,
            reward_points=args.reward_points,
            levels_per_company=args.levels_per_company,
            companies=tuple(c.strip() for c in args.companies.split(",") if c.strip()),
            default_company=args.default_company,
            page_size=args.page_size,
            seed=args.seed,
            publisher_options={"timeout": args.event_timeout, "retries": args.event_retries,
                               "retry_wait": args.event_retry_wait},
            service_protection=from_cli_arguments(args),
            lines=args.lines,
            as_of=args.as_of,
            never_expires=args.never_expires,
            open_valid_to=args.open_valid_to,
        )

    return run_cli(build, forwarded, prog="python -m emulators.commerce")


if __name__ == "__main__":
    raise SystemExit(main())
