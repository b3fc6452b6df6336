"""The gallery as a ServiceComponent for the shared bootstrap."""

from __future__ import annotations

import asyncio
import logging

import grpc

from likeness.gallery.search import make_ranker
from likeness.gallery.servicer import GalleryServicer
from likeness.gallery.store import PromptStore
from likeness.gallery.v1 import gallery_service_pb2, gallery_service_pb2_grpc
from likeness.server.settings import Settings
from likeness.storage.base import open_storage

log = logging.getLogger(__name__)


class GalleryComponent:
    name = "gallery"
    service_names = (gallery_service_pb2.DESCRIPTOR.services_by_name["GalleryService"].full_name,)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        storage = open_storage(settings.storage_url, cache_dir=settings.cache_path / "storage")
        self.store = PromptStore(storage, ranker=make_ranker(semantic=settings.gallery_semantic))

    def register(self, server: grpc.aio.Server) -> None:
        gallery_service_pb2_grpc.add_GalleryServiceServicer_to_server(GalleryServicer(self.store), server)

    async def start(self) -> None:
        loaded = await asyncio.to_thread(self.store.preload)
        log.info("gallery index loaded", extra={"records": loaded})

    async def stop(self, grace_seconds: float) -> None:
        """The gallery holds no background work; every write is already in storage."""
        log.info("gallery stopped")
