"""What the local API accepts for a job stays within what the network takes (issue h23
F1): a deadline over 23 h after submission (providers count announcements whose deadline
is over 24 h ahead as misbehaviour, against the honest requester) and a max_price under 1
(a lock of 0 is refused on the ledger: the API answered 500 and the job stayed, locking,
for good) are refused with what to change, before anything is locked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import scheduler
from node._errors import ConfigError
from node.config import CONFIG_FILE, RequesterConfig, load_config
from node.daemon import JobSubmitError
from node.daemon.submit import check_request
from sandbox import tiny_model_path
from scheduler._provider_bids import MAX_DEADLINE_AHEAD_MS

from .daemon._cluster import tiny_inputs


def _check(**kw: Any) -> list[tuple[str, bytes]]:
    args: dict[str, Any] = dict(
        runtime="onnx", redundancy=1, max_retries=2, max_price=1_000, deadline_ms=60_000
    )
    args.update(kw)
    return check_request(tiny_model_path().read_bytes(), tiny_inputs(), **args)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("max_price", 0, "max_price must be at least 1"),
        ("max_price", -5, "max_price must be at least 1"),
        ("deadline_ms", 25 * 3_600_000, "deadline_ms must be between 1 and 82800000"),
        ("deadline_ms", scheduler.MAX_DEADLINE_MS + 1, "(23 h: providers refuse"),
        ("deadline_ms", 0, "deadline_ms must be between"),
    ],
)
def test_a_request_the_network_would_refuse_is_a_clear_error(
    field: str, value: int, says: str
) -> None:
    with pytest.raises(JobSubmitError) as refused:
        _check(**{field: value})
    assert says in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1


def test_the_limits_themselves_are_accepted() -> None:
    assert _check(max_price=1, deadline_ms=scheduler.MAX_DEADLINE_MS)
    # An hour short of what providers take, for clocks that disagree.
    assert scheduler.MAX_DEADLINE_MS + 3_600_000 <= MAX_DEADLINE_AHEAD_MS


def test_the_default_deadline_is_bounded_in_config(tmp_path: Path) -> None:
    limit = RequesterConfig.model_fields["deadline_ms"].metadata
    assert any(getattr(m, "le", None) == scheduler.MAX_DEADLINE_MS for m in limit)
    (tmp_path / CONFIG_FILE).write_text("[requester]\ndeadline_ms = 90000000\n")
    with pytest.raises(ConfigError, match="deadline_ms"):
        load_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("[requester]\nmax_price = 0\n")
    with pytest.raises(ConfigError, match="max_price"):
        load_config(tmp_path)


def test_an_input_tensor_over_what_the_network_decodes_is_a_clear_error() -> None:
    # A tensor's data is one byte string of the canonical encoding (at most 1 MiB): a
    # bigger input passed the 4 MiB content check and every provider then failed to
    # decode it ("crashed: could not fetch the job's data").
    import numpy as np

    from node.daemon._codec import MAX_TENSOR_BYTES, tensor_bytes, tensor_from_bytes

    at_limit = np.zeros(MAX_TENSOR_BYTES // 4, dtype=np.float32)
    assert tensor_from_bytes(tensor_bytes(at_limit)).nbytes == MAX_TENSOR_BYTES
    big = {"x": np.zeros(MAX_TENSOR_BYTES // 4 + 1, dtype=np.float32)}
    with pytest.raises(JobSubmitError) as refused:
        check_request(
            tiny_model_path().read_bytes(),
            big,
            runtime="onnx",
            redundancy=1,
            max_retries=2,
            max_price=1_000,
            deadline_ms=60_000,
        )
    assert "split it into several inputs" in str(refused.value)
