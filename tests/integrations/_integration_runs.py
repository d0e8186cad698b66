"""What the integration tests share: comparing weights bit for bit, reading a diagnosis."""
from __future__ import annotations

import torch


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """The tensors that differ (bit for bit) between two state dicts; empty when they are identical."""
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def codes(diagnosis) -> dict[str, str]:
    """Finding code → severity."""
    return {f.code: f.severity for f in diagnosis.findings}


def serious(diagnosis) -> list[tuple[str, str]]:
    """Warning and error findings, with their messages."""
    return [(f.code, f.message) for f in diagnosis.findings if f.severity in ("warning", "error")]


def contained(diagnosis) -> list[str]:
    return [n for n in diagnosis.notes if "internal error contained" in n]
