"""What a crash says, in plain JSON (the ``crash`` event of a live run and of a checkup)."""
from __future__ import annotations

import traceback
from typing import Any


def crash_event_data(exc: BaseException) -> dict[str, Any]:
    """What a crash says: type, message and the innermost frame of user code."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "/traindoctor/" not in f.filename and "/torch/" not in f.filename]
    where = user[-1] if user else (frames[-1] if frames else None)
    return {
        "type": type(exc).__name__,
        "message": str(exc).strip().splitlines()[0][:500] if str(exc).strip() else "",
        "where": f"{where.filename}:{where.lineno}" if where else None,
        "line": (where.line or "") if where else None,
    }
