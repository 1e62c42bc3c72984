"""Reading a notebook that Jupyter is saving."""

from __future__ import annotations

import json
from pathlib import Path


def saved_widget_state(path: Path) -> str:
    """The notebook's saved widget state as JSON text; "" while the server is still writing it
    (with each widget's front-end bundle in the state, a save takes a moment)."""
    try:
        return json.dumps(json.loads(path.read_text()).get("metadata", {}).get("widgets", {}))
    except (json.JSONDecodeError, FileNotFoundError):
        return ""
