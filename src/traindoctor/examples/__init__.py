"""Built-in example training runs: small plain-PyTorch scripts that reliably show one fault each.

Every script here is a complete, standalone training script written the way practitioners write
them (scikit-learn data, an ``nn.Module``, a loss, an optimizer, a seeded ``DataLoader`` and the
usual ``zero_grad / forward / loss / backward / step`` loop, one printed line per epoch). None of
them imports traindoctor: the tool watches them unmodified, which is what makes them honest demo
data and test fixtures.

Each script is fully seeded and accepts ``--epochs N``, ``--steps N`` (stop after N optimizer
steps), ``--seed S``, ``--lr``, ``--batch-size``, ``--save PATH`` (``torch.save`` of the final
``state_dict``) and ``--dump-losses PATH`` (the per-step training losses as JSON, under
``"losses"``; NaN/Infinity are written as Python's json writes them). Each runs in a few seconds
on a CPU.

``EXAMPLES`` maps a scenario name (dashes, e.g. ``lr-too-high``) to its :class:`Example`;
:func:`script_path` gives the file to run::

    python "$(python -c 'from traindoctor.examples import script_path; print(script_path("lr-too-high"))')"

This module imports neither torch nor any script.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Example:
    name: str
    """Scenario name, with dashes: ``lr-too-high``."""
    script: str
    """File name of the script in this package: ``lr_too_high.py``."""
    summary: str
    """One line: what is wrong (or that nothing is)."""
    healthy: bool
    """True for runs with nothing to fix."""


def _ex(name: str, summary: str, healthy: bool = False) -> Example:
    return Example(name=name, script=name.replace("-", "_") + ".py", summary=summary, healthy=healthy)


EXAMPLES: dict[str, Example] = {
    e.name: e
    for e in (
        _ex(
            "healthy",
            "Nothing wrong: digits MLP with Adam lr 1e-3; the loss falls smoothly from 2.3 to ~0.1, val acc > 0.9.",
            healthy=True,
        ),
        _ex(
            "lr-too-high",
            "SGD lr=10 on the digits MLP: the loss grows 10-100x a step and turns Inf/NaN around step 25, "
            "then stays NaN.",
        ),
        _ex(
            "lr-oscillation",
            "SGD lr=1.0 on raw (unscaled) digits, tanh MLP: the loss swings between ~7 and ~50 with no downward "
            "trend, never NaN.",
        ),
        _ex(
            "lr-too-low", "SGD lr=1e-5: the loss sits flat at ln(10)=2.30 from the start; the network is not learning."
        ),
        _ex(
            "double-softmax",
            "nn.Softmax at the end of the model plus nn.CrossEntropyLoss: the loss plateaus at ~1.50, above the "
            "1.4612 floor, although accuracy is fine.",
        ),
        _ex(
            "bce-saturation",
            "Unscaled inputs into Sigmoid + BCELoss: the sigmoid saturates to exactly 0/1 and the batch loss sits at "
            "multiples of 100/32 (BCELoss's clamp); no learning.",
        ),
        _ex(
            "label-out-of-range",
            "Labels 1..10 for a 10-output model: CrossEntropyLoss crashes at the first batch with "
            "'IndexError: Target 10 is out of bounds.'",
        ),
        _ex(
            "nonfinite-data",
            "Three all-NaN rows in the training inputs: the loss is NaN from the first batch that holds one, "
            "then stays NaN.",
        ),
        _ex(
            "healthy-noisy-sgd",
            "Nothing wrong: plain SGD with batch size 4; the per-step loss is very noisy but its trend falls clearly.",
            healthy=True,
        ),
        _ex(
            "healthy-slow",
            "Nothing wrong, just early: SGD lr 0.004; the loss falls steadily from 2.3 to ~1.7 with no plateau.",
            healthy=True,
        ),
        _ex(
            "healthy-spike",
            "Nothing wrong with training: one corrupted batch at step 150 gives a single loss spike (~100x), "
            "recovered at the next step.",
            healthy=True,
        ),
        _ex(
            "healthy-regression",
            "Nothing wrong: MLP regression on standardised diabetes data with MSE; the loss falls from ~1 and "
            "settles around 0.4.",
            healthy=True,
        ),
    )
}


def script_path(name: str) -> Path:
    """Path of the script for scenario ``name`` (dashes, as in ``EXAMPLES``).

    Raises KeyError, listing the known names, for an unknown one.
    """
    try:
        example = EXAMPLES[name]
    except KeyError:
        raise KeyError(f"unknown example {name!r}; known: {', '.join(EXAMPLES)}") from None
    return Path(__file__).resolve().parent / example.script
