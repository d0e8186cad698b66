"""The torch-facing layer both measuring halves share: ``watch/`` (a live run) and ``checks/`` (the
checkup) import it; it imports neither.

``tensors.py`` walks nested tensors and autograd graphs; ``losses.py`` tells the loss kind of a
module, a function or an autograd node; ``lossgraph.py`` reads the loss's graph; ``trace.py`` is the
first-step trace (model graph, targets, hand-written losses, functional activations); ``model.py``
measures the model (init scale, float16 headroom, custom autograd functions); ``data.py`` and
``batches.py`` profile batches (data profile, label domain, leakage); ``crash.py`` says what a crash
says; ``script.py`` runs a user's script as ``python`` would; ``hooks.py`` keeps the doctor's own
global hooks out of ``torch.compile``'s warning. Everything here measures and returns plain JSON;
nothing decides what is wrong.
"""
