"""One input parser per material class, shared by cleaning and by the descriptors.

=============  ======================================  =========================================
class          input string                            parser -> canonical form (cleaning)
=============  ======================================  =========================================
molecule       SMILES                                  :func:`parse_smiles` -> RDKit canonical
polymer        SMILES of a repeat unit with two ``*``  :func:`parse_smiles` -> RDKit canonical
inorganic      formula (``Fe2O3``, ``Ca(OH)2``)        :func:`parse_formula` -> reduced formula
structure      JSON of a pymatgen ``Structure`` dict   :func:`parse_structure` -> sorted sites
=============  ======================================  =========================================

A parser returns None for an input it cannot read; the canonical forms return ``(canonical,
None)`` or ``(None, reason code)``. RDKit and pymatgen are imported on first use.

:func:`reads_as` tells which kinds a string reads as, and :func:`check_kinds` checks a column of
inputs against the kinds a model or a transfer run expects: a composition model must not read
``CCO`` as the formula C2O, nor a molecule model return blanks for a column of formulas.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..errors import ShotgunError, ShotgunWarning
from .declarations import DATASET_CLASSES

# The element symbols, by atomic number (H..Og).
ELEMENTS = tuple(
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se "
    "Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy "
    "Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf "
    "Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og".split()
)
_ELEMENT_SET = frozenset(ELEMENTS)
# Numbers in a formula, and amounts written after an element symbol or a closing bracket.
_NUMBER = re.compile(r"\d*\.?\d+(?:[eE][-+]?\d+)?")
_AMOUNT = re.compile(r"(?<=[A-Za-z)\]])\s*([-+]?(?:\d+\.?\d*|\.\d+))")
# A flat formula of element symbols and amounts, parsed without pymatgen.
_SIMPLE_FORMULA = re.compile(r"(?:[A-Z][a-z]?(?:\d+(?:\.\d+)?|\.\d+)?)+")
_SIMPLE_TOKEN = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d+)?|\.\d+)?")


def _quiet_rdkit() -> None:
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")


def parse_smiles(smiles: Any):
    """RDKit Mol of ``smiles``, or None if empty or invalid (RDKit logging silenced). ``*`` stays
    a dummy atom (atomic number 0): a polymer repeat unit's attachment point."""
    from rdkit import Chem

    _quiet_rdkit()
    if not isinstance(smiles, str) or not smiles.strip():
        return None
    return Chem.MolFromSmiles(smiles)


def _simple_amounts(formula: str) -> dict[str, float] | None:
    """Amounts of a flat formula such as "Fe2O3" (the same as pymatgen's); None to defer to
    pymatgen (brackets, hydrates, unknown symbols)."""
    if not _SIMPLE_FORMULA.fullmatch(formula):
        return None
    amounts: dict[str, float] = {}
    for symbol, number in _SIMPLE_TOKEN.findall(formula):
        if symbol not in _ELEMENT_SET:
            return None
        amounts[symbol] = amounts.get(symbol, 0.0) + (float(number) if number else 1.0)
    return amounts


def parse_formula(formula: Any) -> dict[str, float] | None:
    """Element amounts of a chemical formula, or None when it is empty, cannot be parsed, names
    something that is not an element, or has a zero or negative amount (pymatgen silently drops
    zero amounts, ``Fe0O`` -> ``O``, so they are rejected before it sees them)."""
    if not isinstance(formula, str) or not formula.strip():
        return None
    if any(float(m) == 0.0 for m in _NUMBER.findall(formula)):
        return None
    if any(float(m) <= 0 for m in _AMOUNT.findall(formula)):
        return None
    amounts = _simple_amounts(formula)
    if amounts is None:
        from pymatgen.core import Composition

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                comp = Composition(formula)
                if not comp.valid:  # unknown symbols become dummy species
                    return None
                amounts = comp.get_el_amt_dict()
        except Exception:  # pymatgen raises ValueError, KeyError, ... on bad formulas
            return None
    if not amounts or not all(math.isfinite(a) and a > 0 for a in amounts.values()):
        return None
    return amounts


def parse_structure(s: Any):
    """A pymatgen Structure from the JSON string of its dict, or None if it does not parse."""
    from pymatgen.core import Structure

    if not isinstance(s, str) or not s.strip():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Structure.from_dict(json.loads(s))
    except Exception:  # JSON and pymatgen raise various errors on bad input
        return None


def structure_to_input(structure) -> str:
    """The input string of a pymatgen Structure."""
    return json.dumps(structure.as_dict())


def canonical_smiles(s: str, polymer: bool) -> tuple[str | None, str | None]:
    """RDKit canonical SMILES; a polymer repeat unit must have exactly two ``*``."""
    from rdkit import Chem

    mol = parse_smiles(s)
    if mol is None or mol.GetNumAtoms() == 0:
        return None, "invalid_smiles"
    if polymer and sum(a.GetAtomicNum() == 0 for a in mol.GetAtoms()) != 2:
        return None, "polymer_star_count"
    return Chem.MolToSmiles(mol), None


@lru_cache(maxsize=65536)
def _reduced_formula(amounts: tuple[tuple[str, float], ...]) -> str:
    from pymatgen.core import Composition

    return Composition(dict(amounts)).reduced_formula


def canonical_formula(s: str) -> tuple[str | None, str | None]:
    """pymatgen's reduced formula (``K4Mn4O8`` -> ``KMnO2``)."""
    amounts = parse_formula(s)
    if amounts is None:
        return None, "invalid_formula"
    return _reduced_formula(tuple(amounts.items())), None


def canonical_structure(s: str) -> tuple[str | None, str | None]:
    """The structure's JSON with sites sorted by species, then fractional position, and sorted
    keys, so that one crystal has one spelling."""
    import numpy as np

    st = parse_structure(s)
    if st is None or len(st) == 0 or not st.composition.valid:
        return None, "invalid_structure"
    st = st.get_sorted_structure(
        key=lambda site: (site.species_string, tuple(np.round(np.mod(site.frac_coords, 1.0), 6)))
    )
    return json.dumps(st.as_dict(), sort_keys=True, separators=(",", ":")), None


_CANONICAL = {
    "molecule": lambda s: canonical_smiles(s, polymer=False),
    "polymer": lambda s: canonical_smiles(s, polymer=True),
    "inorganic": canonical_formula,
    "structure": canonical_structure,
}


def canonicalize(
    inputs: Sequence[str], material_class: str
) -> tuple[list[str | None], list[str | None]]:
    """Canonical form of each input, or ``None`` plus a reason code (``missing_input``,
    ``invalid_smiles``, ``polymer_star_count``, ``invalid_formula``, ``invalid_structure``).
    Each distinct string is processed once."""
    if material_class not in DATASET_CLASSES:
        raise ValueError(f"material_class must be one of {DATASET_CLASSES}, got {material_class!r}")
    convert = _CANONICAL[material_class]
    smiles = material_class in ("molecule", "polymer")
    if smiles:
        _quiet_rdkit()
    try:
        cache: dict[str, tuple[str | None, str | None]] = {}
        canon: list[str | None] = []
        reasons: list[str | None] = []
        for x in inputs:
            if x is None or (isinstance(x, float) and math.isnan(x)) or not str(x).strip():
                c, r = None, "missing_input"
            else:
                key = str(x).strip()
                if key not in cache:
                    cache[key] = convert(key)
                c, r = cache[key]
            canon.append(c)
            reasons.append(r)
    finally:
        if smiles:
            from rdkit import RDLogger

            RDLogger.EnableLog("rdApp.error")
    return canon, reasons


# What the inputs of each kind are called in messages.
KIND_NOUNS = {
    "molecule": "SMILES",
    "polymer": "polymer repeat units",
    "inorganic": "formulas",
    "structure": "structures",
}
# Molecules and polymer repeat units are both SMILES; the descriptors of one take the other.
SMILES_KINDS = ("molecule", "polymer")
_SYMBOL = re.compile(r"[A-Z][a-z]?")


class InputKindError(ShotgunError):
    """Inputs that are not of the kind expected; the message says what they read as."""


class InputKindWarning(ShotgunWarning):
    """Some inputs are not of the kind expected; the message counts them."""


def _reads_as(s: str) -> frozenset[str]:
    if s.startswith("{"):
        return frozenset({"structure"}) if parse_structure(s) is not None else frozenset()
    kinds = set()
    mol = parse_smiles(s)
    if mol is not None and mol.GetNumAtoms():
        kinds.add("polymer" if any(a.GetAtomicNum() == 0 for a in mol.GetAtoms()) else "molecule")
    symbols = _SYMBOL.findall(s)
    if parse_formula(s) is not None and not (kinds and len(set(symbols)) < len(symbols)):
        kinds.add("inorganic")
    return frozenset(kinds)


def reads_as(s: Any) -> frozenset[str]:
    """The input kinds a string reads as: ``structure`` (the JSON of a pymatgen Structure dict),
    ``molecule`` (a SMILES), ``polymer`` (a SMILES with ``*``), ``inorganic`` (a formula); empty
    for none. A SMILES that names an element twice is not a formula (``CCO`` is ethanol, not
    C2O); a string such as ``CO`` reads as both."""
    if not isinstance(s, str) or not s.strip():
        return frozenset()
    return _reads_as(s.strip())


@dataclass(frozen=True)
class KindCheck:
    """The result of :func:`check_kinds`: ``fits`` (a bool per input) and what each input reads
    as (``reads_as``, sets of kinds)."""

    fits: Any  # numpy bool array
    reads_as: list[frozenset[str]]


def input_list(inputs: str | Sequence[str]) -> list[str]:
    """``inputs`` as a list; a single string is one input (not its characters)."""
    return [inputs] if isinstance(inputs, str) else list(inputs)


def _examples(inputs: Sequence[str], rows: Sequence[int]) -> str:
    return ", ".join(repr(str(inputs[i])[:40]) for i in rows[:2])


def check_kinds(inputs: Sequence[str], kinds: Sequence[str], source: str = "inputs") -> KindCheck:
    """Which ``inputs`` read as one of ``kinds`` (:func:`reads_as`; molecules and polymer repeat
    units both count as SMILES).

    Raises :class:`InputKindError` when no input does, or when more inputs read as another kind
    only than as one of ``kinds``. Warns (:class:`InputKindWarning`) with counts when some read
    as another kind (they do not fit, like inputs that read as nothing), and when inputs said to
    be polymer repeat units have no ``*`` (or molecules have one). ``source`` (e.g. the file and
    column) starts every message.
    """
    import numpy as np

    wanted = set(kinds) | (set(SMILES_KINDS) if set(kinds) & set(SMILES_KINDS) else set())
    cache: dict[str, frozenset[str]] = {}
    read = []
    for s in inputs:
        if s not in cache:
            cache[s] = reads_as(s)
        read.append(cache[s])
    fits = np.fromiter((bool(r & wanted) for r in read), dtype=bool, count=len(read))
    n, n_fit = len(read), int(fits.sum())
    label = " or ".join(dict.fromkeys(KIND_NOUNS[k] for k in kinds))
    other = [i for i, r in enumerate(read) if r and not fits[i]]
    seen = Counter(k for i in other for k in sorted(read[i]))
    others = ", ".join(f"{c} as {KIND_NOUNS[k]}" for k, c in seen.most_common())
    if n and (n_fit == 0 or len(other) > n_fit):
        why = (
            f"{others} (e.g. {_examples(inputs, other)})"
            if other
            else f"none reads as anything known (e.g. {_examples(inputs, range(n))})"
        )
        raise InputKindError(f"{source}: {n_fit} of {n} inputs read as {label}; {why}")
    if other:
        what = KIND_NOUNS[next(iter(seen))] if len(seen) == 1 else f"another kind ({others})"
        warnings.warn(
            f"{source}: {len(other)} of {n} inputs read as {what}, not as {label} "
            f"(e.g. {_examples(inputs, other)}); they count as not featurizable",
            InputKindWarning,
            stacklevel=2,
        )
    for expected, stray, what in (
        ("polymer", "molecule", "have no * (attachment point): molecules, not repeat units"),
        ("molecule", "polymer", "have a * (attachment point): polymer repeat units"),
    ):
        if expected in kinds and stray not in kinds:
            rows = [i for i, r in enumerate(read) if stray in r]
            if rows:
                warnings.warn(
                    f"{source}: {len(rows)} of {n} inputs {what} (e.g. {_examples(inputs, rows)})",
                    InputKindWarning,
                    stacklevel=2,
                )
    return KindCheck(fits, read)


def input_hashes(canonical: Sequence[str]):
    """64-bit hashes of canonical input strings (the first 8 bytes of their SHA-256, as int64),
    one per input: a library model stores those of its training inputs, sorted and distinct, so
    that a target's inputs can be tested for membership without the source data."""
    import hashlib

    import numpy as np

    return np.array(
        [
            int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little", signed=True)
            for s in canonical
        ],
        dtype=np.int64,
    )


def canonical_hashes(inputs: Sequence[str], material_class: str):
    """:func:`input_hashes` of the canonical forms of raw inputs (:func:`canonicalize`, as
    cleaning writes them); an input without a canonical form is hashed as written."""
    canon, _ = canonicalize(inputs, material_class)
    return input_hashes([c if c is not None else str(x).strip() for c, x in zip(canon, inputs)])
