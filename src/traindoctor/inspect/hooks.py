"""Global module hooks that are the doctor's own.

``torch.compile(module)`` warns when global module hooks exist (they fire once more, for its
wrapper). The doctor's (the live monitor's, the first-step trace's, the checkup's discovery) expect
that: while they are installed, the check torch makes counts only the hooks the script registered
itself, so the script's own still get the warning.
"""
from __future__ import annotations

from typing import Any

import torch

_orig_has_any_global_hook: Any = None
_own_global_hooks: set[int] = set()  # handle ids of our global module hooks


def _has_other_global_hook() -> bool:
    mm = torch.nn.modules.module
    names = ("_global_backward_pre_hooks", "_global_backward_hooks", "_global_forward_pre_hooks",
             "_global_forward_hooks", "_global_forward_hooks_always_called", "_global_forward_hooks_with_kwargs")
    return any(k not in _own_global_hooks for n in names for k in getattr(mm, n, ()))


def own_global_hooks(handles: list[Any], installed: bool) -> None:
    """Count ``handles`` (global module hook handles) as the doctor's own while ``installed``."""
    global _orig_has_any_global_hook
    mm = torch.nn.modules.module
    if not hasattr(mm, "_has_any_global_hook"):
        return
    ids = {h.id for h in handles}
    if installed:
        if _orig_has_any_global_hook is None:
            _orig_has_any_global_hook = mm._has_any_global_hook
            mm._has_any_global_hook = _has_other_global_hook
        _own_global_hooks.update(ids)
    else:
        _own_global_hooks.difference_update(ids)
        if not _own_global_hooks and _orig_has_any_global_hook is not None:
            mm._has_any_global_hook = _orig_has_any_global_hook
            _orig_has_any_global_hook = None
