"""``python -m node.config [specs/config.md]``: print the settings' table, or rewrite it
between its markers in the file given."""

from __future__ import annotations

import sys
from pathlib import Path

from ._doc import DOC_BEGIN, DOC_END, config_doc

if len(sys.argv) < 2:
    print(config_doc())
else:
    doc = Path(sys.argv[1])
    text = doc.read_text()
    head, _, rest = text.partition(DOC_BEGIN)
    _, _, tail = rest.partition(DOC_END)
    doc.write_text(head + config_doc() + tail)
