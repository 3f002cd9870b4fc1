"""Regenerate the generated part of specs/messages.md from the message classes."""

from __future__ import annotations

import sys
from pathlib import Path

from protocol._docs import BEGIN, END, message_reference

SPEC = Path(__file__).resolve().parent.parent / "specs" / "messages.md"


def main() -> int:
    text = SPEC.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    SPEC.write_text(text[:start] + message_reference() + text[end:])
    print(f"wrote {SPEC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
