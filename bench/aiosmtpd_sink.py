"""A bare aiosmtpd server that accepts every message and keeps none: the peer in bench/smtp_load.py that
shows what aiosmtpd and asyncio cost on their own, with no checks, no storage and no fsync.

It uses aiosmtpd's stock ``SMTP`` protocol (which holds each message in memory, as ``Envelope.content``)
and a handler whose DATA hook only answers 250. Run by bench/smtp_load.py, or by hand:

    .venv/bin/python bench/aiosmtpd_sink.py [--host 127.0.0.1] [--port 0]

It prints ``ready <port>`` once it listens, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiosmtpd.smtp import SMTP, Envelope, Session

DATA_SIZE_LIMIT = 64 * 1024 * 1024
"""Above aiosmtpd's 32 MiB default, so that the 50 MB message of the memory check is accepted."""


class DiscardHandler:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 Ok: discarded"


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = DiscardHandler()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=DATA_SIZE_LIMIT, hostname="aiosmtpd-sink"), host, port
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default): any free port")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
