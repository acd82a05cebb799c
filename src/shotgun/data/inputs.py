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
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

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
