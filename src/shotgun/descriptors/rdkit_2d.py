"""RDKit 2D descriptors (``rdkit_2d``): every function of ``rdkit.Chem.Descriptors.descList``.

The list (217 descriptors in RDKit 2026.09: MolWt, TPSA, MolLogP, BCUT2D_*, fr_* ...)
comes from the installed RDKit; feature names are the RDKit names. A different
RDKit release may add descriptors: ``from_spec`` then still rebuilds the
descriptor, but feature tables of the two releases are not interchangeable, so
the spec records the number of descriptors (``n_descriptors``) and rebuilding
checks it.

Polymer attachment points: every ``*`` is capped with hydrogen before the
descriptors are computed (``*CC*`` is described as ethane, ``*c1ccc(*)cc1`` as
benzene), so that physical descriptors such as MolWt, TPSA or MolLogP are
those of the repeat unit's atoms; with ``*`` kept, RDKit treats dummies as
atoms of mass 0 with no contribution tables, which skews e.g. heavy-atom
counts, BCUT and Labute ASA. The attachment information is carried by the
fingerprints, which keep ``*``.

Invalid values: a descriptor that raises or returns NaN/inf, or a value beyond
float32 range, marks the molecule ``ok=False`` (the whole row NaN) rather than
imputing a number that would look like a measurement; ``last_failures`` on the
descriptor instance counts, per descriptor name, the rows it invalidated in the
last ``featurize`` call. (This happens for e.g. BCUT2D_* on elements without
Gasteiger parameters, or Ipc overflowing on large molecules.)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..data.inputs import parse_smiles
from .base import Descriptor, register

_F32_MAX = float(np.finfo(np.float32).max)


@lru_cache(maxsize=1)
def descriptor_list() -> tuple[tuple[str, object], ...]:
    from rdkit.Chem import Descriptors

    return tuple(Descriptors.descList)


def cap_attachment_points(mol):
    """``mol`` with every dummy atom (``*``) replaced by an implicit hydrogen."""
    from rdkit import Chem

    dummies = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() == 0]
    if not dummies:
        return mol
    rw = Chem.RWMol(mol)
    for i in dummies:
        atom = rw.GetAtomWithIdx(i)
        atom.SetAtomicNum(1)
        atom.SetIsAromatic(False)
        atom.SetNoImplicit(True)
    capped = Chem.RemoveHs(rw.GetMol(), sanitize=False)
    Chem.SanitizeMol(capped)
    return capped


@register
class RDKit2DDescriptor(Descriptor):
    name = "rdkit_2d"
    version = "1"
    kinds = ("molecule", "polymer")
    parallel_min_inputs = 400  # ~240 molecules/s/core

    def __init__(self, n_descriptors: int | None = None):
        self._n_descriptors = n_descriptors  # checked when RDKit is first needed
        self.last_failures: dict[str, int] = {}

    @property
    def params(self) -> dict:
        return {"n_descriptors": len(self._functions())}

    def _functions(self):
        funcs = descriptor_list()
        if self._n_descriptors is not None and self._n_descriptors != len(funcs):
            raise ValueError(
                f"rdkit_2d was computed with {self._n_descriptors} RDKit descriptors; "
                f"the installed RDKit has {len(funcs)}"
            )
        return funcs

    def feature_names(self) -> list[str]:
        return [name for name, _ in self._functions()]

    def featurize(self, inputs) -> tuple[np.ndarray, np.ndarray]:
        funcs = self._functions()
        inputs = list(inputs)
        X = np.full((len(inputs), len(funcs)), np.nan, dtype=np.float32)
        ok = np.zeros(len(inputs), dtype=bool)
        failures: dict[str, int] = {}
        row = np.empty(len(funcs), dtype=np.float64)
        for i, smi in enumerate(inputs):
            mol = parse_smiles(smi)
            if mol is None:
                continue
            try:
                mol = cap_attachment_points(mol)
            except Exception:  # capping can fail to sanitize exotic valences
                continue
            bad = []
            for j, (name, fn) in enumerate(funcs):
                try:
                    row[j] = fn(mol)
                except Exception:  # RDKit descriptor functions raise various errors
                    row[j] = np.nan
                if not abs(row[j]) <= _F32_MAX:  # NaN, inf or beyond float32
                    bad.append(name)
            for name in bad:
                failures[name] = failures.get(name, 0) + 1
            if not bad:
                X[i] = row
                ok[i] = True
        self.last_failures = failures
        return X, ok
