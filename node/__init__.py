"""The AIMatrix Node daemon: identity, hardware probe, roles, CLI."""
