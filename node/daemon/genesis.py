"""The genesis protocol (``/aimx/genesis/1``): a node without the chain's genesis asks a
bootstrap peer for it; every node serves its own. Also the ``genesis.bin`` file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ledger
import protocol

from ..net import Network, NetworkError, PeerKey, RequestHandler
from ._errors import GenesisUnavailable

log = logging.getLogger(__name__)

GENESIS_PROTOCOL = "/aimx/genesis/1"
#: A genesis request carries nothing.
MAX_GENESIS_REQUEST_BYTES = 64
GENESIS_FILE = "genesis.bin"


def genesis_server(genesis: ledger.Genesis) -> RequestHandler:
    """The handler serving ``genesis`` (the request's bytes are ignored)."""
    encoded = genesis.encode()

    async def serve(peer: PeerKey, request: bytes) -> bytes:
        return encoded

    return serve


def genesis_path(data_dir: Path) -> Path:
    return data_dir / GENESIS_FILE


def read_genesis(data_dir: Path) -> ledger.Genesis | None:
    path = genesis_path(data_dir)
    if not path.exists():
        return None
    try:
        return ledger.Genesis.decode(path.read_bytes())
    except (OSError, ledger.LedgerError) as exc:
        raise GenesisUnavailable(
            f"cannot read {path}: {exc}; remove it to fetch it again"
        ) from None


def write_genesis(data_dir: Path, genesis: ledger.Genesis) -> None:
    """Write ``genesis.bin`` atomically, readable by its owner only (0600)."""
    tmp = data_dir / f".{GENESIS_FILE}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(genesis.encode())
    os.replace(tmp, genesis_path(data_dir))


async def fetch_genesis(
    net: Network, bootstrap: tuple[str, ...], chain_id: str, genesis_hash: str
) -> ledger.Genesis:
    """Ask the bootstrap peers for the genesis whose hash is ``genesis_hash`` (hex): a peer
    cannot hand a joining node a chain of its own making (specs/daemon.md)."""
    if not genesis_hash:
        raise GenesisUnavailable(
            "joining a chain needs its genesis hash: pass --genesis-hash HASH (a coordinator "
            "prints it when it starts, and `aimx node status` on it shows it)"
        )
    mismatched = 0
    for address in bootstrap:
        try:
            peer = protocol.public_key_of(address.rsplit("/p2p/", 1)[1])
            data = await net.request(peer, GENESIS_PROTOCOL, b"", timeout=10)
            genesis = ledger.Genesis.decode(data)
        except (
            IndexError,
            ValueError,
            protocol.ProtocolError,
            NetworkError,
            ledger.LedgerError,
        ) as exc:
            log.warning("no genesis from %s: %s", address, exc)
            continue
        if genesis.hash().hex() != genesis_hash:
            log.warning("%s sent a genesis with another hash; ignored", address)
            mismatched += 1
            continue
        if genesis.chain_id != chain_id:
            raise GenesisUnavailable(
                f"the bootstrap peer runs chain {genesis.chain_id!r}, not {chain_id!r}; "
                "set chain_id to match or use another bootstrap peer"
            )
        return genesis
    if mismatched:
        raise GenesisUnavailable(
            f"{mismatched} bootstrap peer(s) sent a genesis whose hash is not {genesis_hash}: "
            "check --genesis-hash, or bootstrap from a node of that chain"
        )
    raise GenesisUnavailable(
        "no bootstrap peer gave this node the chain's genesis (see the warnings above): "
        "check that the coordinator at --bootstrap runs and is reachable from here"
    )
