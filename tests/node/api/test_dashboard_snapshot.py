"""What the dashboard shows (node/api/_dashboard_snapshot.py): the earnings book read
back from its file, and the state word of the header."""

from __future__ import annotations

import json
from pathlib import Path

from node.api._dashboard_snapshot import EARNINGS_FILE, load_earnings, node_state, write_earnings


def test_the_earnings_book_is_read_back_and_a_torn_line_skipped(tmp_path: Path) -> None:
    (tmp_path / EARNINGS_FILE).write_text(
        '{"at_ms": 5, "amount": 7, "job": "aa"}\n{"at_ms": 9, "amount": 3, "job": "bb"}\n{"at_'
    )
    book = load_earnings(tmp_path / EARNINGS_FILE)
    assert book.entries == [(0, 10)] and book.total == 10  # one minute's bucket
    assert load_earnings(tmp_path / "none").total == 0


def test_the_earnings_file_is_written_again_as_buckets_so_it_stays_bounded(
    tmp_path: Path,
) -> None:
    path = tmp_path / EARNINGS_FILE
    start = 1_800_000_000_000
    # a payment every 2 s for 3 days, as one line each (what the file held before)
    with open(path, "w") as f:
        for i in range(3 * 43_200):
            f.write(json.dumps({"at_ms": start + 2_000 * i, "amount": 3, "job": "aa"}) + "\n")
    book = load_earnings(path)
    assert book.total == 3 * 3 * 43_200 and len(book.entries) == 3 * 1_440
    write_earnings(path, book)
    again = load_earnings(path)
    assert again.entries == book.entries and again.total == book.total
    assert len(path.read_text().splitlines()) == 3 * 1_440
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_the_state_word_and_its_reason() -> None:
    avail = {"state": "paused", "paused": True, "reason": "outside the schedule"}
    assert node_state({"availability": avail}) == {
        "state": "paused",
        "reason": "outside the schedule",
    }
    assert node_state({"connected_peers": 0})["state"] == "offline"
    assert node_state({"connected_peers": 2, "provider": {"active": 1}})["state"] == "working"
    assert node_state({"connected_peers": 2, "fault": "disk full"})["state"] == "paused"
