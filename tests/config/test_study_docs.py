"""docs/study-file.md is generated from the study-file classes (`mincap.config.docgen`), and what it
says a key accepts is what reading a study file enforces."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import get_args, get_origin, get_type_hints

import pytest

from mincap.config.docgen import markdown
from mincap.config.study import StudyConfig, parse_study, rules
from mincap.errors import MincapError

DOC = Path(__file__).resolve().parents[2] / "docs" / "study-file.md"
SECTIONS = {f.name: f.type for f in dataclasses.fields(StudyConfig) if f.name != "path"}
HINTS = get_type_hints(StudyConfig)


def test_the_committed_page_is_the_generators_output():
    assert DOC.read_text() == markdown(), "docs/study-file.md is stale: python -m mincap.config.docgen > docs/study-file.md"
    r = subprocess.run([sys.executable, "-m", "mincap.config.docgen"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == markdown()


def test_every_key_of_every_table_is_on_the_page():
    text = DOC.read_text()
    for name in SECTIONS:
        section = text.split(f"## `[{name}]`")[1].split("\n## ")[0]
        for f in dataclasses.fields(HINTS[name]):
            assert f"| `{f.name}` |" in section, (name, f.name)


def _value(hint, v):
    """`v` as the TOML value of a field of type `hint`: a [low, high] pair, a list, or itself."""
    if get_origin(hint) is tuple:
        args = get_args(hint)
        return [v, v] if len(args) == 2 and args[1] is not Ellipsis else [v]
    return v


def _probes():
    """(section, key, value, accepted) at each documented bound and choice."""
    for name in SECTIONS:
        cls = HINTS[name]
        hints = get_type_hints(cls)
        for key, rule in rules(cls).items():
            hint = hints[key]
            elem = get_args(hint)[0] if get_origin(hint) is tuple else hint
            step = 1 if elem is int else 1e-6
            cases = []
            if rule.choices is not None:
                cases += [(c, True) for c in rule.choices] + [("nope", False)]
            if rule.ge is not None:
                cases += [(rule.ge, True), (rule.ge - step, False)]
            if rule.gt is not None:
                cases += [(rule.gt, False), (rule.gt + step, True)]
            if rule.le is not None:
                cases += [(rule.le, True), (rule.le + step, False)]
            if rule.lt is not None:
                cases += [(rule.lt, False), (rule.lt - step, True)]
            for v, ok in cases:
                yield name, key, _value(hint, elem(v)), ok


PROBES = list(_probes())


def test_the_rules_bound_something():
    assert len(PROBES) > 60 and {p[0] for p in PROBES} == {"study", "data", "budget", "space", "early_stop",
                                                          "fidelity", "oneshot"}


@pytest.mark.parametrize("section,key,value,accepted", PROBES, ids=[f"{p[0]}.{p[1]}={p[2]}" for p in PROBES])
def test_each_documented_bound_is_what_parsing_enforces(section, key, value, accepted):
    raw = {section: {key: value}}
    if accepted:
        parse_study(raw)
    else:
        with pytest.raises(MincapError, match=rf"^{section}\.{key}: "):
            parse_study(raw)
