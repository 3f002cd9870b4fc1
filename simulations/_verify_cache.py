"""The labelled verification cache (a scenario's ``verify_cache = true``): the protocol's
cache of Ed25519 checks known to pass (:mod:`protocol._verify_cache`)."""

from protocol._verify_cache import verification_cache as verification_cache
