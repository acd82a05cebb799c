"""Hashed fingerprints of molecules and polymer repeat units (RDKit).

=============  ==========================================================  =====================
name           RDKit                                                        params (defaults)
=============  ==========================================================  =====================
``ecfp``       Morgan generator, ECFP atom invariants, no chirality         radius 3, n_bits 2048,
                                                                            counts True
``fcfp``       Morgan generator, feature (FCFP) atom invariants             radius 3, n_bits 2048,
                                                                            counts True
``atom_pair``  atom-pair generator, topological distances 1..max_distance   n_bits 2048, counts
                                                                            True, max_distance 30
``torsion``    topological-torsion generator                                n_bits 2048, counts
                                                                            True, atom_count 4
``rdkit_fp``   RDKit (Daylight-like) path fingerprint, paths 1..max_path    n_bits 2048, counts
                                                                            False, max_path 7
``maccs``      the 166 MACCS keys (``MACCSkeys.GenMACCSKeys``; bit 0 unused) 167 bits
=============  ==========================================================  =====================

``counts=True`` gives hashed count vectors, ``counts=False`` bit vectors; values
are small non-negative integers stored as float32. The bit vectors of
``atom_pair`` and ``torsion`` use RDKit's default count simulation (a count sets
up to four bits), as RDKit's hashed atom-pair/torsion bit fingerprints do.

Polymer attachment points: ``*`` is kept as a dummy atom (atomic number 0) by
every fingerprint here. The attachment points are part of the atom
environments, paths, pairs and torsions, so "*CC*" and "CC" differ (for MACCS
only through keys that look at atoms of any element or at chain ends), and
repeat units that differ only in where ``*`` attaches get different
fingerprints, while equivalent SMILES spellings of the same repeat unit give
identical ones (all are graph invariants). Capping ``*`` with hydrogens would
lose the attachment information; replacing it with a real element would make
the repeat unit look like a different chemistry. (``rdkit_2d`` caps, see
``rdkit_2d.py``: its descriptors are physical quantities of a molecule.)

A SMILES that RDKit cannot parse, or an empty string, gives ``ok=False``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.inputs import parse_smiles
from .base import Descriptor, register


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class Fingerprint(Descriptor):
    """Molecule fingerprints: ``n_features`` integer-valued columns from a Mol."""

    kinds = ("molecule", "polymer")
    prefix: str

    def feature_names(self) -> list[str]:
        kind = "count" if self.params.get("counts") else "bit"
        return [f"{self.prefix}_{kind}_{i}" for i in range(self.n_features)]

    def _fingerprint(self):
        """A function Mol -> 1-D numpy array of length ``n_features``."""
        raise NotImplementedError

    def featurize(self, inputs) -> tuple[np.ndarray, np.ndarray]:
        return densify(self.n_features, *self.featurize_sparse(inputs))

    def featurize_sparse(self, inputs) -> tuple[np.ndarray, ...]:
        """Nonzero values per input: (lengths, indices, values, ok), the rows of a CSR matrix
        (``indices`` int32, ``values`` uint16; counts beyond 65535, never seen in practice,
        saturate). Fingerprints are sparse: this is what parallel workers ship back."""
        fp = self._fingerprint()
        inputs = list(inputs)
        lengths = np.zeros(len(inputs), dtype=np.int64)
        ok = np.zeros(len(inputs), dtype=bool)
        indices, values = [], []
        for i, smi in enumerate(inputs):
            mol = parse_smiles(smi)
            if mol is not None:
                v = fp(mol)  # uint8 bits, uint32 counts
                nz = np.flatnonzero(v)
                indices.append(nz)
                values.append(v[nz])
                lengths[i], ok[i] = len(nz), True
        indices = np.concatenate(indices).astype(np.int32) if indices else np.zeros(0, np.int32)
        values = np.concatenate(values) if values else np.zeros(0, np.uint16)
        return lengths, indices, np.minimum(values, 65535, dtype=np.uint32).astype(np.uint16), ok


def densify(
    n_features: int, lengths, indices, values, ok, order: str = "C"
) -> tuple[np.ndarray, np.ndarray]:
    """The float32 matrix (NaN rows where not ok) of :meth:`Fingerprint.featurize_sparse`'s
    output, and ok; ``order="F"`` lays it out column-major, as a feature table stores it."""
    X = np.zeros((len(ok), n_features), dtype=np.float32, order=order)
    X[np.repeat(np.arange(len(ok)), lengths), indices] = values
    X[~ok] = np.nan
    return X, ok


class GeneratorFingerprint(Fingerprint):
    """Fingerprints from an ``rdFingerprintGenerator`` generator (built lazily, not pickled)."""

    def __init__(self, n_bits: int = 2048, counts: bool = True, **params: int):
        self.params = {**params, "n_bits": _check_int("n_bits", n_bits, 1), "counts": bool(counts)}
        self._generator = None

    @property
    def n_features(self) -> int:
        return self.params["n_bits"]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_generator"] = None  # RDKit generators do not pickle
        return state

    def _make_generator(self):
        raise NotImplementedError

    def _fingerprint(self):
        if self._generator is None:
            self._generator = self._make_generator()
        g = self._generator
        return g.GetCountFingerprintAsNumPy if self.params["counts"] else g.GetFingerprintAsNumPy


@register
class ECFPDescriptor(GeneratorFingerprint):
    name = "ecfp"
    version = "1"
    prefix = "ecfp"

    def __init__(self, radius: int = 3, n_bits: int = 2048, counts: bool = True):
        super().__init__(n_bits, counts, radius=_check_int("radius", radius, 0))

    def _atom_invariants(self):
        return None

    def _make_generator(self):
        from rdkit.Chem import rdFingerprintGenerator as G

        return G.GetMorganGenerator(
            radius=self.params["radius"],
            fpSize=self.params["n_bits"],
            atomInvariantsGenerator=self._atom_invariants(),
        )


@register
class FCFPDescriptor(ECFPDescriptor):
    name = "fcfp"
    version = "1"
    prefix = "fcfp"

    def _atom_invariants(self):
        from rdkit.Chem import rdFingerprintGenerator as G

        return G.GetMorganFeatureAtomInvGen()


@register
class AtomPairDescriptor(GeneratorFingerprint):
    name = "atom_pair"
    version = "1"
    prefix = "atom_pair"

    def __init__(self, n_bits: int = 2048, counts: bool = True, max_distance: int = 30):
        super().__init__(n_bits, counts, max_distance=_check_int("max_distance", max_distance, 1))

    def _make_generator(self):
        from rdkit.Chem import rdFingerprintGenerator as G

        return G.GetAtomPairGenerator(
            minDistance=1, maxDistance=self.params["max_distance"], fpSize=self.params["n_bits"]
        )


@register
class TorsionDescriptor(GeneratorFingerprint):
    name = "torsion"
    version = "1"
    prefix = "torsion"

    def __init__(self, n_bits: int = 2048, counts: bool = True, atom_count: int = 4):
        super().__init__(n_bits, counts, atom_count=_check_int("atom_count", atom_count, 2))

    def _make_generator(self):
        from rdkit.Chem import rdFingerprintGenerator as G

        return G.GetTopologicalTorsionGenerator(
            torsionAtomCount=self.params["atom_count"], fpSize=self.params["n_bits"]
        )


@register
class RDKitFPDescriptor(GeneratorFingerprint):
    name = "rdkit_fp"
    version = "1"
    prefix = "rdkit_fp"

    def __init__(self, n_bits: int = 2048, counts: bool = False, max_path: int = 7):
        super().__init__(n_bits, counts, max_path=_check_int("max_path", max_path, 1))

    def _make_generator(self):
        from rdkit.Chem import rdFingerprintGenerator as G

        return G.GetRDKitFPGenerator(
            minPath=1, maxPath=self.params["max_path"], fpSize=self.params["n_bits"]
        )


@register
class MACCSDescriptor(Fingerprint):
    name = "maccs"
    version = "1"
    prefix = "maccs"

    def __init__(self):
        self.params = {}

    @property
    def n_features(self) -> int:
        return 167

    def _fingerprint(self):
        from rdkit.Chem import MACCSkeys

        def fp(mol):
            bits = MACCSkeys.GenMACCSKeys(mol).ToBitString()
            return np.frombuffer(bits.encode(), dtype=np.uint8) - ord("0")

        return fp
