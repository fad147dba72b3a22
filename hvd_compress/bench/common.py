"""Pieces every benchmark command shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional


def write_json(path: Optional[str], result: Any) -> None:
    """Write a command's result as indented JSON to ``path`` (creating its folder); no-op without one."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1))
