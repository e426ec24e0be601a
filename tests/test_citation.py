"""CITATION.cff: the fields CFF 1.2.0 requires, kept in step with the package's version and licence.

(The file was validated against the CFF 1.2.0 schema with cffconvert 2.0.0 when written; this test
keeps the facts in it true as the package changes.)
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

import retnet_ref

ROOT = Path(__file__).resolve().parent.parent


def _citation():
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def test_citation_has_the_required_fields_and_matches_the_package():
    cff = _citation()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["message"].strip() and cff["title"].strip()
    assert cff["authors"] and all(a.get("name") or a.get("family-names") for a in cff["authors"])
    assert str(cff["version"]) == retnet_ref.__version__ == pyproject["version"]
    assert cff["license"] == pyproject["license"]


def test_citation_references_the_retnet_paper():
    (paper,) = [r for r in _citation()["references"] if "Retentive Network" in r["title"]]
    assert (
        paper["title"] == "Retentive Network: A Successor to Transformer for Large Language Models"
    )
    assert paper["year"] == 2023 and paper["authors"][0] == {"family-names": "Sun",
                                                             "given-names": "Yutao"}
    ids = {i["type"]: str(i["value"]) for i in paper["identifiers"]}
    assert ids["doi"] == "10.48550/arXiv.2307.08621" and ids["other"] == "arXiv:2307.08621"
    assert paper["url"] == "https://arxiv.org/abs/2307.08621"
