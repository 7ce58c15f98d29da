"""The bounds and choices a study-file key accepts: `Rule`, attached to a field by `checked`.

Both the validation (`mincap.config.study`) and the generated page (`mincap.config.docgen`,
docs/study-file.md) read them, so what the page says a key accepts is what reading enforces.
A module of its own so that the tables defined beside the study file's (`mincap.config.oneshot`)
use the same rules without importing the parser.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["Rule", "checked", "rules"]


@dataclass(frozen=True)
class Rule:
    """What a key accepts beyond its type, checked when a study file is read: numbers within bounds
    or names from a set, for a value and for each element of a list. `note` says what no bound can
    (checked by hand in `mincap.config.study._validate`). docs/study-file.md is generated from these
    (`mincap.config.docgen`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    note: str = ""

    def text(self) -> str:
        """'within (0, 1]', '>= 1', 'one of tpe, nsga2, random', or '' (any value of the type)."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else ""
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else ""
        if low and high:
            return f"within {low}, {high}"
        if low:
            return f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}"
        if high:
            return f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}"
        return ""

    def accepts(self, v) -> bool:
        if self.choices is not None:
            return v in self.choices
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))


def checked(default, **rule):
    """A field whose value (each element, for a list) a study file must keep within `Rule(**rule)`."""
    return field(default=default, metadata={"rule": Rule(**rule)})


def rules(cls: type) -> dict[str, Rule]:
    """The `Rule` of each field of a study-file table that has one."""
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(cls) if "rule" in f.metadata}
