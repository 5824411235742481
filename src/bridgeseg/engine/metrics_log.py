"""``OUT/metrics.jsonl``: one JSON object per line (training steps, evaluations, config changes on
resume), appended by rank 0; a write that fails names the file."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import write_text, writing


class MetricsLog:
    """Appends one JSON object per line to ``path`` (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        """Append ``record`` (it must have a ``step``). Raises ``OutputError`` naming the file."""
        if self.enabled:
            with writing(self.path), self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Keep only the records of steps up to ``step`` (all gone for step 0), rewritten atomically."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and step > 0 and json.loads(line)["step"] <= step]
        write_text(self.path, "".join(line + "\n" for line in kept))
