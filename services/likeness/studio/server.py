"""Serving the Studio: waitress (a production WSGI server in pure Python) on its own port, in a thread."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from waitress.server import create_server

from likeness.server.settings import Settings
from likeness.studio.app import StudioConfig, create_app

log = logging.getLogger("likeness.studio")

#: Worker threads: watches and generation streams hold one each for as long as they run.
THREADS = 16


class StudioServer:
    """`StudioServer(settings, services_address).start()`; `.url`; `.stop()`."""

    def __init__(
        self,
        settings: Settings,
        services_address: str,
        *,
        host: str | None = None,
        port: int | None = None,
        **config_overrides: Any,
    ) -> None:
        config = StudioConfig(
            services_address=services_address,
            secret=settings.studio_secret,
            tls_ca_file=settings.studio_tls_ca_file or None,
            secure_cookies=settings.studio_secure_cookies,
            default_base_model=settings.default_base_model,
        )
        self.app = create_app(dataclasses.replace(config, **config_overrides))
        self._server = create_server(
            self.app,
            host=host if host is not None else settings.host,
            port=settings.studio_port if port is None else port,
            threads=THREADS,
            channel_timeout=600,
            ident="likeness-studio",
        )
        self._thread = threading.Thread(target=self._server.run, name="likeness-studio", daemon=True)

    @property
    def port(self) -> int:
        return self._server.effective_port

    @property
    def url(self) -> str:
        host = self._server.effective_host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{self.port}/"

    def start(self) -> StudioServer:
        self._thread.start()
        log.info("studio listening", extra={"url": self.url})
        return self

    def stop(self) -> None:
        # Let running requests end first (a closed trigger would fail their last write), then stop listening.
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        self._server.close()
        self._thread.join(timeout=10)
        self.app.extensions["likeness_pool"].close()
