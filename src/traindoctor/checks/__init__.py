"""Checks and probes over tensors: the measuring half of ``traindoctor.checkup``.

``checkup.py`` runs them and records every number into a Run (events, series, metadata) that
the rules judge; ``data.py`` (data profile, label domain, leakage), ``model.py`` (loss
description and graph, init scale, float16 headroom, custom autograd functions) and
``probes/`` (the registered probes, one module each: LR range test, fitting tiny data, short
training, shallow against deep, bad-batch bisection) compute numbers from tensors and return them as plain-JSON event data —
nothing here decides what is wrong. ``state.py`` saves and restores everything a probe touches;
``batches.py`` turns a loader into checked ``(inputs, targets, ids)`` batches; ``discover.py``
finds the model, loss, optimizer and loaders of an unmodified script at its first loss;
``report.py`` renders a checkup in the terminal. The live monitor can call the same check
functions (``DataProfile.update``, ``init_scale``, ``precision_facts``) on its first batches, so
a checkup and a live run record the same facts for the same rules.
"""
