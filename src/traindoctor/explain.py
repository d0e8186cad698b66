"""``traindoctor explain CODE|CAUSE``: documentation from the rules themselves and the catalogue."""
from __future__ import annotations

from .catalogue import CAUSES, FAMILIES, SYMPTOMS
from .errors import TrainDoctorError


def explain(key: str) -> str:
    from .rules import all_rules

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
        causes = [c for c in CAUSES.values() if code in c.symptoms]
        if causes:
            lines += ["", "Typical causes: " + ", ".join(c.id for c in causes)]
        return "\n".join(lines)
    if k.lower() in CAUSES:
        c = CAUSES[k.lower()]
        head = f"{c.id}: {c.title}"
        lines = [head, "=" * len(head), "", "Typical symptoms: " + " ".join(c.symptoms), "", "Fixes, most effective first:"]
        lines += [f"  {i}. {f}" for i, f in enumerate(c.fixes, 1)]
        return "\n".join(lines)
    raise TrainDoctorError(
        f"unknown code or cause id {key!r}; symptom codes look like L001 (families {', '.join(FAMILIES)}), "
        f"cause ids like lr-too-high (see `traindoctor explain --list`)"
    )


def listing() -> str:
    from .rules import all_rules

    rules = all_rules()
    out = ["Symptom codes (* = detected automatically):"]
    for s in SYMPTOMS.values():
        out.append(f"  {'*' if s.code in rules else ' '} {s.code} {s.name}")
    out.append("Cause ids:")
    out += [f"    {c.id}" for c in CAUSES.values()]
    return "\n".join(out)
