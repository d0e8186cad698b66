"""The checkup: ``traindoctor.checkup`` and ``traindoctor checkup SCRIPT.py``.

``checkup.py`` runs it as phases (read data → inspect model → first loss → probes) and records
every number into a Run (events, series, metadata) that the rules judge; ``discover.py`` finds the
model, loss, optimizer and loaders of an unmodified script at its first loss; ``probes/`` holds the
registered probes, one module each (LR range test, fitting tiny data, short training, shallow
against deep, bad-batch bisection, gradient check); ``report.py`` renders a checkup in the
terminal. The measurements themselves (data profile, init scale, float16 headroom, the loss graph,
the first-step trace, the bitwise roll-back of ``inspect/state.py``) live in ``inspect/``, shared
with the live monitor, so a checkup and a live run record the same facts for the same rules.
Nothing here decides what is wrong.
"""
