"""Save and restore everything a probe could touch, so a checkup leaves no trace.

A probe trains the user's own model in place (so custom layers, hooks and parametrisations
behave exactly as in training) and is then rolled back: parameter and buffer values are copied
back into the *same* tensor objects (the user's optimizer keeps pointing at them), gradients are
put back as they were (``None`` stays ``None``), every module's ``training`` flag and every
parameter's ``requires_grad`` are reset, and the RNGs (torch CPU and CUDA, NumPy, ``random``,
and the data loaders' own generators) are restored. The user's optimizer is never stepped:
probes build their own; its state is still saved and compared, to prove it.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch generators a DataLoader draws from (its own, its sampler's, a batch sampler's)."""
    out: list[torch.Generator] = []
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
                getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        g = getattr(obj, "generator", None) if obj is not None else None
        if isinstance(g, torch.Generator) and all(g is not o for o in out):
            out.append(g)
    return out


def _cuda_ready() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


@dataclass
class RngState:
    cpu: torch.Tensor
    cuda: list[torch.Tensor] | None
    numpy: Any
    python: Any
    generators: list[tuple[torch.Generator, torch.Tensor]] = field(default_factory=list)

    @classmethod
    def take(cls, generators: list[torch.Generator] = ()) -> RngState:  # type: ignore[assignment]
        return cls(
            cpu=torch.get_rng_state(),
            cuda=torch.cuda.get_rng_state_all() if _cuda_ready() else None,
            numpy=np.random.get_state(),
            python=random.getstate(),
            generators=[(g, g.get_state()) for g in generators],
        )

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        np.random.set_state(self.numpy)
        random.setstate(self.python)
        for g, s in self.generators:
            g.set_state(s)


@dataclass
class ModelState:
    """Values, gradients, flags of one model, restorable into the same tensor objects."""

    model: nn.Module
    tensors: list[tuple[torch.Tensor, torch.Tensor]]
    grads: list[tuple[torch.Tensor, torch.Tensor | None]]
    requires_grad: list[tuple[torch.Tensor, bool]]
    training: list[tuple[nn.Module, bool]]

    @classmethod
    def take(cls, model: nn.Module) -> ModelState:
        params = list(model.parameters())
        with torch.no_grad():
            tensors = [(t, t.detach().clone()) for t in [*params, *model.buffers()]]
            grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in params]
        return cls(
            model=model,
            tensors=tensors,
            grads=grads,
            requires_grad=[(p, p.requires_grad) for p in params],
            training=[(m, m.training) for m in model.modules()],
        )

    def restore(self) -> None:
        with torch.no_grad():
            for t, saved in self.tensors:
                if t.shape != saved.shape or t.dtype != saved.dtype:
                    t.data = saved.clone()
                else:
                    t.copy_(saved)
            for p, g in self.grads:
                p.grad = None if g is None else g.clone()
        for p, rg in self.requires_grad:
            p.requires_grad_(rg)
        for m, tr in self.training:
            m.training = tr

    def identical(self) -> bool:
        """Bitwise: every value, gradient and flag as saved."""
        for t, saved in self.tensors:
            if not _same(t.detach(), saved):
                return False
        for p, g in self.grads:
            if (p.grad is None) != (g is None) or (g is not None and not _same(p.grad, g)):
                return False
        return all(p.requires_grad == rg for p, rg in self.requires_grad) and all(
            m.training == tr for m, tr in self.training
        )


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (NaN equals NaN when its bits do)."""
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if a.is_floating_point() or a.is_complex():
        a = a.detach().contiguous().reshape(-1).view(torch.uint8)
        b = b.detach().contiguous().reshape(-1).view(torch.uint8)
    return bool(torch.equal(a, b))


def optimizer_fingerprint(opt: torch.optim.Optimizer | None) -> Any:
    """A deep copy of the optimizer's state_dict: compared before/after to prove it was not touched."""
    if opt is None:
        return None
    return copy.deepcopy(opt.state_dict())


def same_state_dict(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return _same(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state_dict(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state_dict(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return bool(a == b)


@dataclass
class Snapshot:
    """Everything a checkup may touch; ``restore()`` puts it back, ``identical()`` proves it."""

    model: ModelState
    optimizer: torch.optim.Optimizer | None
    opt_state: Any
    rng: RngState

    @classmethod
    def take(cls, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
             loaders: list[Any] = ()) -> Snapshot:  # type: ignore[assignment]
        gens: list[torch.Generator] = []
        for ld in loaders:
            if ld is not None:
                gens += [g for g in loader_generators(ld) if all(g is not o for o in gens)]
        return cls(ModelState.take(model), optimizer, optimizer_fingerprint(optimizer), RngState.take(gens))

    def restore_model(self) -> None:
        self.model.restore()

    def restore(self) -> None:
        self.model.restore()
        if self.optimizer is not None and not same_state_dict(self.optimizer.state_dict(), self.opt_state):
            self.optimizer.load_state_dict(copy.deepcopy(self.opt_state))
        self.rng.restore()

    def identical(self) -> bool:
        if not self.model.identical():
            return False
        if self.optimizer is not None and not same_state_dict(self.optimizer.state_dict(), self.opt_state):
            return False
        now = RngState.take([g for g, _ in self.rng.generators])
        return (
            torch.equal(now.cpu, self.rng.cpu)
            and (self.rng.cuda is None or all(torch.equal(a, b) for a, b in zip(now.cuda or [], self.rng.cuda)))
            and same_state_dict(list(now.numpy), list(self.rng.numpy))
            and now.python == self.rng.python
            and all(torch.equal(g.get_state(), s) for g, s in self.rng.generators)
        )


@contextmanager
def rolled_back(snapshot: Snapshot, seed: int = 0) -> Iterator[None]:
    """Run a probe from the user's starting point, seeded, and roll the model back afterwards."""
    snapshot.restore_model()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        snapshot.restore_model()


def _copy_value(v: Any, clone: bool = True) -> Any:
    """A tensor detached (and cloned unless ``clone`` is off); anything else deep-copied."""
    if isinstance(v, torch.Tensor):
        return v.detach().clone() if clone else v.detach()
    return copy.deepcopy(v)


def _put_back(holder: dict[Any, Any], key: Any, saved: Any) -> None:
    """``holder[key] = saved``, into the tensor already there when it fits (its users keep their reference)."""
    cur = holder.get(key)
    if (isinstance(cur, torch.Tensor) and isinstance(saved, torch.Tensor) and cur.shape == saved.shape
            and cur.dtype == saved.dtype):
        cur.copy_(saved)
    else:
        holder[key] = _copy_value(saved)


def optimizer_params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters in the order of its groups (the order its state_dict numbers them)."""
    return [p for g in opt.param_groups for p in g["params"]]


@dataclass
class OptimizerState:
    """One optimizer's per-parameter state and group settings, restorable in place.

    Unlike ``load_state_dict`` (which builds new state tensors and new group dicts), ``restore()``
    copies the values back into the tensors the optimizer holds and reassigns the settings on the
    same group dicts, so anything that keeps a reference to them (a scheduler, the user) stays valid.
    ``clone=False`` keeps references instead of copies: the caller saves them at once (to disk).
    """

    optimizer: torch.optim.Optimizer
    groups: list[dict[str, Any]]
    state: list[dict[str, Any] | None]  # per parameter, in group order; None: no state yet

    @classmethod
    def take(cls, optimizer: torch.optim.Optimizer, clone: bool = True) -> OptimizerState:
        with torch.no_grad():
            groups = [{k: _copy_value(v, clone) for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
            state = [
                {k: _copy_value(v, clone) for k, v in optimizer.state[p].items()} if p in optimizer.state else None
                for p in optimizer_params(optimizer)
            ]
        return cls(optimizer, groups, state)

    def tensors(self) -> list[torch.Tensor]:
        return [v for d in [*self.groups, *(s for s in self.state if s)] for v in d.values() if isinstance(v, torch.Tensor)]

    def restore(self) -> None:
        opt = self.optimizer
        with torch.no_grad():
            for g, saved in zip(opt.param_groups, self.groups):
                for k in [k for k in g if k != "params" and k not in saved]:
                    del g[k]
                for k, v in saved.items():
                    _put_back(g, k, v)
            for p, saved in zip(optimizer_params(opt), self.state):
                if saved is None:
                    opt.state.pop(p, None)
                elif p not in opt.state:
                    opt.state[p] = {k: _copy_value(v) for k, v in saved.items()}
                else:
                    cur = opt.state[p]
                    for k in [k for k in cur if k not in saved]:
                        del cur[k]
                    for k, v in saved.items():
                        _put_back(cur, k, v)

    def identical(self) -> bool:
        """Bitwise: every state tensor and group setting as saved."""
        opt = self.optimizer
        now = [opt.state[p] if p in opt.state else None for p in optimizer_params(opt)]
        return same_state_dict(
            [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups], self.groups
        ) and same_state_dict(now, self.state)
