"""Write a benchmark's Markdown report and its raw rows (JSON) side by side."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(out, lines, rows):
    """Write ``lines`` to ``out`` (Markdown) and ``rows`` to ``out`` with ``.json``; print."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print("\n".join(lines))
