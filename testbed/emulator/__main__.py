"""``python -m testbed.emulator``: run the emulator as a standalone process.

The first stdout line is the server URL (flushed), written only after the kubeconfig (if
requested) is in place, so a parent can block on that line and then use either.  Logs go to
stderr.  Serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import structlog

from testbed.emulator import server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m testbed.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the server here")
    parser.add_argument("--bookmark-interval", type=float, default=5.0)
    parser.add_argument("--history", type=int, default=10000)
    parser.add_argument(
        "--no-validate", action="store_true", help="accept objects that fail validation"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    emulator = server.Emulator(
        host=args.host,
        port=args.port,
        bookmark_interval=args.bookmark_interval,
        history=args.history,
        validate=not args.no_validate,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await emulator.start()
    try:
        if args.kubeconfig:
            emulator.write_kubeconfig(args.kubeconfig)
        sys.stdout.write(emulator.url + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> int:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
