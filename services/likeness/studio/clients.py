"""Python clients for the Studio's requests, one per API key and kept briefly, so a page does not open a new
gRPC channel on every request. A cache of connections, not of data: every answer comes from the services."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from likeness_client import LikenessClient

#: Distinct keys whose channels stay open (a support desk with many tenants; each channel is cheap when idle).
MAX_CLIENTS = 64


def key_slot(api_key: str) -> str:
    """A name for a key that does not reveal it (the key's SHA-256)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class ClientPool:
    """`pool.get(api_key)`: a LikenessClient for the services at `address`, sending that key ("" sends none)."""

    def __init__(self, address: str, *, tls_ca_file: str | None = None, timeout: float = 30.0) -> None:
        self.address = address
        self.tls_ca_file = tls_ca_file
        self.timeout = timeout
        self._clients: OrderedDict[str, LikenessClient] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, api_key: str) -> LikenessClient:
        slot = key_slot(api_key)
        with self._lock:
            client = self._clients.get(slot)
            if client is not None:
                self._clients.move_to_end(slot)
                return client
            client = LikenessClient(
                self.address, api_key=api_key, tls_ca_file=self.tls_ca_file, timeout=self.timeout, max_reconnects=2
            )
            self._clients[slot] = client
            while len(self._clients) > MAX_CLIENTS:
                _, oldest = self._clients.popitem(last=False)
                oldest.close()
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
