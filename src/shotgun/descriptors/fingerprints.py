"""ECFP (Morgan) fingerprints for molecules and polymer repeat units.

Fingerprints come from RDKit's ``rdFingerprintGenerator.GetMorganGenerator``
with default ECFP atom invariants and no chirality; ``counts=True`` gives the
hashed count vector, ``counts=False`` the bit vector.

Polymer attachment points: ``*`` is kept as a dummy atom (atomic number 0).
The attachment points are thus part of the atom environments, so "*CC*" and
"CC" differ, and repeat units that differ only in where ``*`` attaches get
different fingerprints, while equivalent SMILES spellings of the same repeat
unit give identical ones (Morgan environments are graph invariants). The ``*``
atoms themselves also contribute environments. Capping ``*`` with hydrogens
would lose the attachment information; replacing it with a real element would
make the repeat unit look like a different chemistry.

A SMILES that RDKit cannot parse, or an empty string, gives ``ok=False``.
"""

from __future__ import annotations

import numpy as np

from . import Descriptor


class ECFPDescriptor(Descriptor):
    name = "ecfp"
    version = "1"
    kinds = ("molecule", "polymer")

    def __init__(self, radius: int = 3, n_bits: int = 2048, counts: bool = True):
        if int(radius) != radius or radius < 0:
            raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
        if int(n_bits) != n_bits or n_bits < 1:
            raise ValueError(f"n_bits must be a positive integer, got {n_bits!r}")
        self.params = {"radius": int(radius), "n_bits": int(n_bits), "counts": bool(counts)}
        self._generator = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_generator"] = None  # RDKit generators do not pickle
        return state

    def feature_names(self) -> list[str]:
        prefix = "ecfp_count" if self.params["counts"] else "ecfp_bit"
        return [f"{prefix}_{i}" for i in range(self.params["n_bits"])]

    def featurize(self, inputs) -> tuple[np.ndarray, np.ndarray]:
        from rdkit import Chem, RDLogger
        from rdkit.Chem import rdFingerprintGenerator

        RDLogger.DisableLog("rdApp.*")
        if self._generator is None:
            self._generator = rdFingerprintGenerator.GetMorganGenerator(
                radius=self.params["radius"], fpSize=self.params["n_bits"]
            )
        fp = (
            self._generator.GetCountFingerprintAsNumPy
            if self.params["counts"]
            else self._generator.GetFingerprintAsNumPy
        )
        inputs = list(inputs)
        X = np.full((len(inputs), self.params["n_bits"]), np.nan, dtype=np.float32)
        ok = np.zeros(len(inputs), dtype=bool)
        for i, smi in enumerate(inputs):
            if not isinstance(smi, str) or not smi.strip():
                continue
            mol = Chem.MolFromSmiles(smi)
            if mol is None:
                continue
            X[i] = fp(mol)
            ok[i] = True
        return X, ok
