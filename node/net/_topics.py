"""Pubsub topic names (specs/network.md, "Topics")."""

from __future__ import annotations

from ._limits import check_topic


def job_topic(chain_id: str, capability_class: str) -> str:
    """The topic jobs of ``capability_class`` are announced on: ``aimx/<chain>/jobs/<class>``."""
    return check_topic(f"aimx/{chain_id}/jobs/{capability_class}")
