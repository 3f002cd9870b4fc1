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
    tmp = data_dir / f".{GENESIS_FILE}.tmp"
    tmp.write_bytes(genesis.encode())
    os.replace(tmp, genesis_path(data_dir))


async def fetch_genesis(net: Network, bootstrap: tuple[str, ...], chain_id: str) -> ledger.Genesis:
    """Ask the bootstrap peers for the genesis (trust on first use; specs/daemon.md)."""
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
        if genesis.chain_id != chain_id:
            raise GenesisUnavailable(
                f"the bootstrap peer runs chain {genesis.chain_id!r}, not {chain_id!r}; "
                "set chain_id to match or use another bootstrap peer"
            )
        return genesis
    raise GenesisUnavailable(
        "no genesis in the data directory and none from a bootstrap peer: pass --bootstrap "
        "with a coordinator's address, or start a coordinator first"
    )
