"""What the dashboard shows (node/api/_dashboard_snapshot.py): the earnings book read
back from its file, and the state word of the header."""

from __future__ import annotations

from pathlib import Path

from node.api._dashboard_snapshot import EARNINGS_FILE, load_earnings, node_state


def test_the_earnings_book_is_read_back_and_a_torn_line_skipped(tmp_path: Path) -> None:
    (tmp_path / EARNINGS_FILE).write_text(
        '{"at_ms": 5, "amount": 7, "job": "aa"}\n{"at_ms": 9, "amount": 3, "job": "bb"}\n{"at_'
    )
    book = load_earnings(tmp_path / EARNINGS_FILE)
    assert book.entries == [(5, 7), (9, 3)] and book.total == 10
    assert load_earnings(tmp_path / "none").total == 0


def test_the_state_word_and_its_reason() -> None:
    avail = {"state": "paused", "paused": True, "reason": "outside the schedule"}
    assert node_state({"availability": avail}) == {
        "state": "paused",
        "reason": "outside the schedule",
    }
    assert node_state({"connected_peers": 0})["state"] == "offline"
    assert node_state({"connected_peers": 2, "provider": {"active": 1}})["state"] == "working"
    assert node_state({"connected_peers": 2, "fault": "disk full"})["state"] == "paused"
