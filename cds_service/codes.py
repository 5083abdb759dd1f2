"""Code lookup: which value-set concepts a (system, code) pair belongs to.

Value sets list exact codes and, for ICD-10-CM, roots that include all their descendants. The
ICD-10-CM tabular is a code-prefix hierarchy (category `C50` > subcategory `C50.9` > code
`C50.911`), and its blocks (`C00-C14`) are ranges of three-character categories, so a subtree
is matched by prefix or range here; `tests/test_valuesets.py` checks that this equals the
descendants in the CMS tabular for every root the value sets use.
"""

from dataclasses import dataclass, field
from functools import cached_property


def icd10cm_key(code: str) -> str:
    """An ICD-10-CM code as compared here: no dot, no surrounding space, upper case."""
    return code.strip().replace(".", "").upper()


def is_block(code: str) -> bool:
    """`C00-C14`: a range of categories."""
    return "-" in code


@dataclass
class CodeIndex:
    """Exact (system URI, code) pairs and ICD-10-CM subtrees, each naming its concepts."""

    icd10cm: str
    """The ICD-10-CM system URI, whose codes are compared without dots and matched by subtree."""
    read_as_icd10cm: frozenset[str] = frozenset()
    """Systems whose codes are looked up as ICD-10-CM codes (WHO ICD-10: ICD-10-CM extends it,
    and the categories and most four-character codes are the same)."""
    exact: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    prefixes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    blocks: list[tuple[str, str, str]] = field(default_factory=list)
    """(lowest category, highest category, concept)."""

    def add(self, system: str, code: str, concept: str, descendants: bool) -> None:
        if not descendants:
            key = (system, icd10cm_key(code) if system == self.icd10cm else code)
            self.exact[key] = (*self.exact.get(key, ()), concept)
        elif is_block(code):
            low, high = (icd10cm_key(end) for end in code.split("-", 1))
            self.blocks.append((low, high, concept))
        else:
            root = icd10cm_key(code)
            self.prefixes[root] = (*self.prefixes.get(root, ()), concept)

    @cached_property
    def icd10_systems(self) -> frozenset[str]:
        """ICD-10-CM and the systems read as it."""
        return frozenset({self.icd10cm, *self.read_as_icd10cm})

    def concepts(self, system: str | None, code: str | None) -> tuple[str, ...]:
        """The concepts `code` belongs to, each once, in value-set order."""
        if system is None or code is None:
            return ()
        if system in self.read_as_icd10cm:
            system = self.icd10cm
        if system != self.icd10cm:
            return self.exact.get((system, code), ())
        key = icd10cm_key(code)
        found: list[str] = list(self.exact.get((system, key), ()))
        for end in range(3, len(key) + 1):
            found.extend(self.prefixes.get(key[:end], ()))
        found.extend(concept for low, high, concept in self.blocks if low <= key[:3] <= high)
        return tuple(dict.fromkeys(found))
