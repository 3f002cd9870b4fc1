"""Does a provider take a job? The checks in order, each with its NoBid reason."""

from __future__ import annotations

from protocol import JobSpec, NoBidReason

from ._config import ProviderConfig


def match(
    spec: JobSpec,
    config: ProviderConfig,
    *,
    active: int,
    bidding: int = 0,
    now_ms: int,
    run_ms: int,
    draining: bool,
) -> tuple[NoBidReason, str] | None:
    """``None`` if the provider can bid on ``spec``, else ``(reason, detail)``.

    The checks run in this order, and the first that fails gives the reason (one of
    ``protocol.NOBID_REASONS``): shutting_down, class_not_served, runtime_unsupported,
    requirements_unmet (also for a ``tolerance`` job, unless ``tolerance_jobs``, and for
    one with both tolerances 0), untrusted_refused, price_below_floor, deadline_too_short,
    busy.
    """
    req = spec.requirements
    if draining:
        return "shutting_down", "this node is draining and takes no new jobs"
    if req.capability_class not in config.capability_classes:
        return "class_not_served", f"serves {', '.join(config.capability_classes)}"
    if spec.runtime not in config.runtimes:
        return "runtime_unsupported", f"runs {', '.join(config.runtimes)}"
    if req.execution_provider not in config.execution_providers:
        return "requirements_unmet", f"no {req.execution_provider}"
    if req.device == "gpu" and config.gpu_memory_mb == 0:
        return "requirements_unmet", "no GPU"
    memory = config.gpu_memory_mb if req.device == "gpu" else config.memory_mb
    if req.min_memory_mb > memory:
        return "requirements_unmet", f"{memory} MB available, {req.min_memory_mb} MB required"
    verification = spec.verification
    if verification.mode == "tolerance":
        if not config.tolerance_jobs:
            return "requirements_unmet", "tolerance mode refused here: ask for exact mode"
        if verification.rtol_e9 == 0 and verification.atol_e9 == 0:
            return "requirements_unmet", "tolerance mode with both tolerances 0: use exact mode"
    if not config.accepts_untrusted and spec.requester not in config.trusted_requesters:
        return "untrusted_refused", "no network-blocking sandbox layer; trusted requesters only"
    if config.price_floor > spec.max_price:
        return "price_below_floor", f"floor {config.price_floor} > max_price {spec.max_price}"
    if now_ms + spec.bid_window_ms + run_ms > spec.deadline_ms:
        return "deadline_too_short", f"needs about {run_ms} ms after the bid window"
    if active >= config.max_concurrency:
        return "busy", f"{active} of {config.max_concurrency} slots in use"
    if active + bidding >= config.max_concurrency * max(1, config.overbook):
        return "busy", f"{active} running and {bidding} bids open"
    return None
