"""``traindoctor explain CODE|CAUSE``: documentation from the rules themselves, the causes' own
definitions and the catalogue's vocabulary (no second copy of anything)."""
from __future__ import annotations

from .catalogue import CAUSES, FAMILIES, SYMPTOMS
from .causes import Cause
from .errors import TrainDoctorError


def explain(key: str) -> str:
    from .causes import all_causes
    from .rules import all_rules, symptoms_of

    rules = all_rules()
    k = key.strip()
    code = k.upper()
    if code in SYMPTOMS:
        sym = SYMPTOMS[code]
        head = f"{sym.code} {sym.name} ({FAMILIES[sym.family]})"
        lines = [head, "=" * len(head), "", f"Catalogue evidence: {sym.evidence}", ""]
        r = rules.get(code)
        if r is not None:
            lines.insert(2, f"Severity: {r.severity}")
            lines.append(r.doc)
        else:
            lines.append("No automatic rule detects this symptom yet; it is part of the catalogue vocabulary.")
        if r is not None and r.causes:
            lines += ["", "Points at: " + ", ".join(r.causes)]
        return "\n".join(lines)
    if k.lower() in CAUSES:
        c = all_causes()[k.lower()]
        head = f"{c.id}: {c.title}"
        lines = [head, "=" * len(head), "", "Supported by: " + (" ".join(symptoms_of(c.id)) or "(no rule yet)"), "",
                 "Fixes, most effective first (made concrete with the run's numbers in a diagnosis, in the "
                 "framework's own terms for a run trained with Lightning, the Hugging Face Trainer or Keras):"]
        lines += [f"  {i}. {f}" for i, f in enumerate(c.fixes, 1)]
        ruled = ruled_out_doc(c)
        if ruled:
            lines += ["", "Ruled out when: " + ruled]
        return "\n".join(lines)
    raise TrainDoctorError(
        f"unknown code or cause id {key!r}; symptom codes look like L001 (families {', '.join(FAMILIES)}), "
        f"cause ids like lr-too-high (see `traindoctor explain --list`)"
    )


def ruled_out_doc(c: Cause) -> str:
    """What rules the cause out, from its own ``against`` docstring ("" when nothing does)."""
    fn = type(c).against
    if fn is Cause.against or not fn.__doc__:
        return ""
    return " ".join(fn.__doc__.split())


def listing() -> str:
    from .rules import all_rules

    rules = all_rules()
    out = ["Symptom codes (* = detected automatically):"]
    for s in SYMPTOMS.values():
        out.append(f"  {'*' if s.code in rules else ' '} {s.code} {s.name}")
    out.append("Cause ids:")
    out += [f"    {c.id}" for c in CAUSES.values()]
    return "\n".join(out)
