"""docs/rules.md is generated from the rules themselves and must match them."""
from pathlib import Path

from traindoctor.catalogue import CAUSES, SYMPTOMS
from traindoctor.docs import render
from traindoctor.explain import explain


def test_rules_md_is_up_to_date():
    committed = (Path(__file__).parent.parent / "docs" / "rules.md").read_text(encoding="utf-8")
    assert committed == render(), "regenerate with: python -m traindoctor.docs > docs/rules.md"


def test_explain_covers_every_code_and_cause():
    for code in SYMPTOMS:
        assert code in explain(code)
    for cid in CAUSES:
        assert cid in explain(cid)
