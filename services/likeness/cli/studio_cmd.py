"""`likeness studio`: the web console on its own port, calling the gRPC services at --studio-services."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from likeness.server.logs import configure_logging
from likeness.server.settings import add_arguments, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "studio",
        help="Likeness Studio: discover prompts, train subjects and generate in a browser",
        description="Serve the Studio on --studio-port; it calls the services at --studio-services "
        "(default $LIKENESS_ADDRESS or 127.0.0.1:50051). `likeness serve all --studio` runs both in one process.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from likeness.studio.server import StudioServer

    settings = load_settings(args)
    configure_logging(settings.log_level, settings.log_format)
    services = settings.studio_services or os.environ.get("LIKENESS_ADDRESS") or "127.0.0.1:50051"
    studio = StudioServer(settings, services).start()
    print(f"Likeness Studio: {studio.url} (services at {services})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    studio.stop()
    return 0
