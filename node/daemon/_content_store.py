"""Content by hash: a requester's models and inputs (pinned by job), a provider's cache."""

from __future__ import annotations

from collections import OrderedDict

from protocol import content_hash


class ContentStore:
    """Blobs by BLAKE2b-256. Pinned blobs stay until every job that pinned them is
    released; unpinned ones form an LRU cache bounded by ``cache_bytes``."""

    def __init__(self, cache_bytes: int = 256 << 20) -> None:
        self._blobs: dict[bytes, bytes] = {}
        self._pins: dict[bytes, set[bytes]] = {}  # hash -> job ids
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._blobs

    def get(self, digest: bytes) -> bytes | None:
        if digest in self._cache:
            self._cache.move_to_end(digest)
        return self._blobs.get(digest)

    def pin(self, job_id: bytes, data: bytes) -> bytes:
        """Keep ``data`` while ``job_id`` needs it; returns its hash."""
        digest = content_hash(data)
        self._uncache(digest)
        self._blobs[digest] = data
        self._pins.setdefault(digest, set()).add(job_id)
        return digest

    def release(self, job_id: bytes) -> None:
        """``job_id`` no longer needs its blobs; they become cache entries."""
        for digest, jobs in list(self._pins.items()):
            jobs.discard(job_id)
            if not jobs:
                del self._pins[digest]
                self._add_cache(digest)

    def cache(self, data: bytes, digest: bytes) -> None:
        """Remember ``data`` (already verified to hash to ``digest``) while room allows."""
        if digest in self._blobs:
            return
        self._blobs[digest] = data
        self._add_cache(digest)

    def _add_cache(self, digest: bytes) -> None:
        self._cache[digest] = None
        self._cached += len(self._blobs[digest])
        while self._cached > self._cache_bytes and self._cache:
            old, _ = self._cache.popitem(last=False)
            self._cached -= len(self._blobs.pop(old))

    def _uncache(self, digest: bytes) -> None:
        if digest in self._cache:
            del self._cache[digest]
            self._cached -= len(self._blobs[digest])
