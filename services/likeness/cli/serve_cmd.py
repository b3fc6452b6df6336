"""`likeness serve trainer|inference|gallery|all`: run services until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio

from likeness.server.app import serve_forever
from likeness.server.composition import COMPONENT_FACTORIES, build_components
from likeness.server.logs import configure_logging
from likeness.server.settings import add_arguments, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gRPC services",
        description="Run one service, or all three in one process on one port (the embedded default).",
    )
    parser.add_argument("service", choices=[*COMPONENT_FACTORIES, "all"], help="which service to run")
    parser.add_argument(
        "--studio", action="store_true", help="also serve Likeness Studio (the web console) on --studio-port"
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    configure_logging(settings.log_level, settings.log_format)
    names = list(COMPONENT_FACTORIES) if args.service == "all" else [args.service]
    studio = None
    if args.studio:
        from likeness.studio.server import StudioServer

        # The Studio calls this process's own gRPC port; until it is up the pages show the unavailable banner.
        studio = StudioServer(settings, settings.studio_services or f"127.0.0.1:{settings.port}").start()
        print(f"Likeness Studio: {studio.url}", flush=True)
    try:
        asyncio.run(serve_forever(build_components(names, settings), settings))
    finally:
        if studio is not None:
            studio.stop()
    return 0
