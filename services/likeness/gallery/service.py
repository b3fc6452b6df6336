"""The gallery as a ServiceComponent for the shared bootstrap."""

from __future__ import annotations

import asyncio
import logging

import grpc

from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.errors import Unavailable
from likeness.gallery.semantic import SemanticSearch
from likeness.gallery.servicer import GalleryServicer
from likeness.gallery.store import PromptStore
from likeness.server.settings import Settings
from likeness.storage.factory import open_storage
from likeness_client.v1 import gallery_service_pb2, gallery_service_pb2_grpc

log = logging.getLogger(__name__)


class GalleryComponent:
    """Holds no state of its own: entries live in the control-plane database, images in shared storage."""

    name = "gallery"
    service_names = (gallery_service_pb2.DESCRIPTOR.services_by_name["GalleryService"].full_name,)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = Database(settings.resolved_database_url)
        storage = open_storage(settings.storage_url, cache_dir=settings.cache_path / "storage")
        # Semantic search needs the bundled sentence embedder (the `gallery` extra); text search never does.
        self.semantic = SemanticSearch(self.database) if settings.gallery_semantic else None
        self.store = PromptStore(self.database, storage, semantic=self.semantic)

    def register(self, server: grpc.aio.Server) -> None:
        gallery_service_pb2_grpc.add_GalleryServiceServicer_to_server(GalleryServicer(self.store), server)

    async def start(self) -> None:
        """Migrates the schema (under the migration lock) and refreshes the built-in seeds: a few dozen rows."""
        try:
            await asyncio.to_thread(migrate, self.database)
            seeds = await asyncio.to_thread(self.store.install_seeds)
        except Unavailable as error:
            raise Unavailable(f"cannot start the gallery: {error.message}") from None
        if self.semantic is not None:
            # In the background: the replica serves text search at once while its index catches up.
            self.semantic.start()
        log.info("gallery started", extra={"database": self.database.where, "seeds": seeds})

    async def stop(self, grace_seconds: float) -> None:
        """Every write is committed when its RPC answers; the semantic follower stops, then the pool closes."""
        if self.semantic is not None:
            await asyncio.to_thread(self.semantic.stop)
        await asyncio.to_thread(self.database.dispose)
        log.info("gallery stopped")
