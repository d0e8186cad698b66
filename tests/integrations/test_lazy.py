"""Importing traindoctor (its Doctor and the integrations package too) imports none of the frameworks."""
from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import traindoctor, traindoctor.integrations
traindoctor.Doctor  # the torch half, loaded on first use
print(sorted(m for m in ("lightning", "pytorch_lightning", "transformers", "keras", "accelerate") if m in sys.modules))
"""


def test_importing_traindoctor_imports_no_framework():
    p = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
