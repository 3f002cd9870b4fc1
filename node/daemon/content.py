"""The content protocol (``/aimx/content/1``): a job's model and inputs, fetched by hash
from its requester by an awarded provider, sealed to that provider."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import protocol
import scheduler

from ..net import PeerKey, RequestRejected
from ._content_store import ContentStore
from ._errors import JobSubmitError

if TYPE_CHECKING:
    from ._node import Node

CONTENT_PROTOCOL = "/aimx/content/1"
#: A content request is ``[job_id, hash]``: small.
MAX_CONTENT_REQUEST_BYTES = 4096
#: Largest content blob served or fetched.
MAX_CONTENT_BYTES = (4 << 20) - 4096
#: How often an awarded provider may fetch one blob of a job: once and a retry (a provider
#: fetches each once, the cache first), not a stream of requests that each cost us sealing
#: up to 4 MiB: an award costs one cheap bid, and 4 fetches of each blob at once, unread,
#: held 76 MiB of sealed answers (round 42, F1).
MAX_FETCHES_PER_BLOB = 2
#: Fetch counts kept (the oldest is forgotten first).
MAX_FETCH_COUNTS = 4_096


class Content:
    """Serves the content of this node's jobs; fetches the content of awarded jobs."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.store = ContentStore()
        self._fetches: OrderedDict[tuple[bytes, PeerKey, bytes], int] = OrderedDict()

    async def serve(self, peer: PeerKey, request: bytes) -> bytes:
        """Model and inputs of a job, sealed to a provider holding a live award of it."""
        node = self._node
        try:
            job_id, digest = protocol.unpack(request)
            if type(job_id) is not bytes or type(digest) is not bytes:
                raise protocol.RemoteProtocolError("expected [job_id, hash]")
        except (protocol.ProtocolError, ValueError, TypeError):
            node.conduct.misbehaved(peer, "malformed content request")
            raise RequestRejected("a content request is [job_id, hash]") from None
        requester = node.requester
        job = requester.jobs.get(job_id) if requester is not None else None
        if requester is None or job is None:
            raise RequestRejected("no such job here")
        if not any(r.provider == peer for r in job.live()):
            node.conduct.misbehaved(peer, "content request without an award")
            raise RequestRejected("only a provider awarded this job may fetch its data")
        if not requester.may_fetch(job_id, peer):  # the job's data is for its run
            raise RequestRejected("the award's run is over: its data is not served again")
        spec = job.spec
        if digest != spec.model_hash and digest not in {i.hash for i in spec.inputs}:
            raise RequestRejected("that content is not part of the job")
        fetched = self._fetches.pop((job_id, peer, digest), 0) + 1
        self._fetches[(job_id, peer, digest)] = fetched
        if len(self._fetches) > MAX_FETCH_COUNTS:
            self._fetches.popitem(last=False)
        if fetched > MAX_FETCHES_PER_BLOB:
            node.conduct.misbehaved(peer, "the same content fetched again and again")
            raise RequestRejected(f"served {MAX_FETCHES_PER_BLOB} times already for this award")
        data = self.store.get(digest)
        if data is None:
            raise RequestRejected("the requester no longer holds that content")
        return scheduler.seal(peer, data)

    async def fetch(self, requester: PeerKey, job_id: bytes, digest: bytes, size: int) -> bytes:
        """A blob of an awarded job, from the cache or its requester (hash checked)."""
        data = self.store.get(digest)
        if data is not None:
            return data
        if size > MAX_CONTENT_BYTES:
            raise JobSubmitError(f"content of {size} bytes is over the {MAX_CONTENT_BYTES} limit")
        node = self._node
        sealed = await node.net.request(
            requester, CONTENT_PROTOCOL, protocol.pack([job_id, digest]), timeout=30
        )
        data = scheduler.open_sealed(node.key, sealed, digest)
        self.store.cache(data, digest)
        return data
