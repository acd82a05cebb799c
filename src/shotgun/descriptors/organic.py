"""Molecules and polymer repeat units as compositions (the cross-class bridge).

``organic_composition`` parses a SMILES with RDKit and counts its atoms, implicit
and explicit hydrogens included (``CCO`` -> C2H6O, ``*CC*`` -> C2H4); the
polymer attachment points ``*`` (atomic number 0) are not atoms of the repeat
unit and are excluded. Charges, isotopes and bond orders are ignored. The
counts go through exactly the element statistics of ``composition``
(``shotgun.descriptors.composition``): same table, same ``stats`` parameter,
same feature names and order.

Compatibility with ``composition`` is explicit: both descriptors have
``feature_space()``, ``"composition:<composition version>:<params>"``, and
two descriptors whose ``feature_space()`` strings are equal produce vectors of
the same layout and meaning. A model trained on ``composition`` can thus be
applied to molecules or polymers through ``organic_composition`` (and back);
``shotgun.descriptors.for_kind(spec, kind)`` finds that descriptor.

A SMILES that RDKit cannot parse, one without any real atom, or one with an
element outside H..Pu gives ``ok=False``.
"""

from __future__ import annotations

from ..data.inputs import parse_smiles
from .base import register
from .composition import ElementStatistics, load_element_table


@register
class OrganicCompositionDescriptor(ElementStatistics):
    name = "organic_composition"
    version = "1"
    kinds = ("molecule", "polymer")

    def parse(self, smiles: str):
        mol = parse_smiles(smiles)
        if mol is None:
            return None
        n_elements = len(load_element_table()[0])  # rows H..Pu, ordered by Z
        amounts: dict[int, float] = {}
        n_h = 0
        for atom in mol.GetAtoms():
            z = atom.GetAtomicNum()
            if z == 0:
                continue
            if z > n_elements:
                return None
            amounts[z - 1] = amounts.get(z - 1, 0.0) + 1.0
            n_h += atom.GetTotalNumHs()
        if n_h:
            amounts[0] = amounts.get(0, 0.0) + n_h
        if not amounts:
            return None
        return tuple(amounts), tuple(amounts.values())
