"""Descriptors of crystal structures: radial distribution function and orbital field matrix.

Input kind ``structure``: each input is a JSON string of a pymatgen Structure
dict, ``json.dumps(structure.as_dict())`` (``shotgun.data.inputs.structure_to_input`` writes one).
Strings keep the Dask path uniform (strings in, arrays out) and a structure
column fits in a CSV or Parquet cell. Inputs that do not parse, empty
structures and disordered (partially occupied) structures give ``ok=False``.

``rdf``: g(r) histogram, ``n_bins = cutoff / bin_size`` bins on [0, cutoff]
(defaults 20 Å, 0.1 Å: 200 features). For every site the distances to all
other atoms (periodic images included) are binned; the count of bin
[r1, r2) is divided by the number of sites N, the shell volume
4/3 pi (r2^3 - r1^3) and the number density N/V, so g(r) -> 1 at large r for
any crystal and does not depend on the choice of cell. (matminer's
RadialDistributionFunction omits the division by N.)

``ofm``: orbital field matrix of Lam Pham et al., Sci. Technol. Adv. Mater. 18,
756 (2017), as in matminer's OrbitalFieldMatrix (without period tags): each
element has a one-hot vector O of length 32 over the valence subshells
(s1..s2, p1..p6, d1..d10, f1..f14; subshells of the outermost shell n, d and f
of n-1 and f of n-2, from pymatgen's electronic structure). For a site i with
Voronoi neighbours k (pymatgen VoronoiNN, weight w_k = solid angle / largest
solid angle, distance r_k in bohr),

    OFM_i[a, b] = sum_k O_k[a] O_i[b] w_k / r_k

and the structure's OFM is the mean of OFM_i over all sites, flattened
row-major to 1,024 features ``ofm_<row>_<col>``. Every atom has at least one
occupied valence subshell and one Voronoi neighbour, so the matrix is never all
zeros (XenonPy issue #260); a structure for which it would be is rejected.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..data.inputs import parse_structure as read_structure
from .base import Descriptor, register

ANG_TO_BOHR = 1.8897261246257702  # 1 Å in bohr (CODATA 2018)
ORBITALS = ("s", 2), ("p", 6), ("d", 10), ("f", 14)
ORBITAL_LABELS = tuple(f"{l}{k}" for l, n in ORBITALS for k in range(1, n + 1))


def parse_structure(s):
    """A pymatgen Structure from its JSON dict string, or None if invalid or disordered."""
    from pymatgen.core import Structure

    structure = read_structure(s)
    if (
        structure is None
        or len(structure) == 0
        or not structure.is_ordered
        or structure.volume <= 0
    ):
        return None
    # sites wrapped into the cell: pymatgen's all-site Voronoi search misses neighbours otherwise
    frac = structure.frac_coords - np.floor(structure.frac_coords)
    return Structure(structure.lattice, structure.species, np.where(frac >= 1.0, 0.0, frac))


class StructureDescriptor(Descriptor):
    kinds = ("structure",)
    parallel_min_inputs = 16  # Voronoi tessellations take ~0.1-1 s per structure

    def _row(self, structure) -> np.ndarray | None:
        raise NotImplementedError

    def featurize(self, inputs) -> tuple[np.ndarray, np.ndarray]:
        inputs = list(inputs)
        X = np.full((len(inputs), self.n_features), np.nan, dtype=np.float32)
        ok = np.zeros(len(inputs), dtype=bool)
        for i, s in enumerate(inputs):
            structure = parse_structure(s)
            if structure is None:
                continue
            try:
                row = self._row(structure)
            except Exception:  # neighbour searches can fail on degenerate cells
                row = None
            if row is not None and np.isfinite(row).all():
                X[i] = row
                ok[i] = True
        return X, ok


@register
class RDFDescriptor(StructureDescriptor):
    name = "rdf"
    version = "1"

    def __init__(self, cutoff: float = 20.0, bin_size: float = 0.1):
        cutoff, bin_size = float(cutoff), float(bin_size)
        n_bins = round(cutoff / bin_size)
        if not (cutoff > 0 and bin_size > 0 and abs(n_bins * bin_size - cutoff) < 1e-9):
            raise ValueError(
                f"cutoff must be a positive multiple of bin_size, got {cutoff}, {bin_size}"
            )
        self.params = {"cutoff": cutoff, "bin_size": bin_size}
        self._edges = np.linspace(0.0, cutoff, n_bins + 1)

    def feature_names(self) -> list[str]:
        return [f"rdf_{lo:.2f}-{hi:.2f}" for lo, hi in zip(self._edges[:-1], self._edges[1:])]

    def _row(self, structure) -> np.ndarray:
        _, _, _, d = structure.get_neighbor_list(self.params["cutoff"])
        hist, _ = np.histogram(d[d > 1e-8], bins=self._edges)
        n = len(structure)
        shell = 4.0 / 3.0 * np.pi * np.diff(self._edges**3)
        return hist / (n * shell * (n / structure.volume))


@lru_cache(maxsize=1)
def valence_one_hot() -> np.ndarray:
    """(95, 32) one-hot valence-subshell vectors by atomic number (row 0 unused)."""
    from pymatgen.core import Element

    offset = {"s": 0, "p": 2, "d": 8, "f": 18}
    table = np.zeros((95, 32))
    for z in range(1, 95):
        shells = Element.from_Z(z).full_electronic_structure
        n_max = max(n for n, _, _ in shells)
        for n, l, occ in shells:
            if n == n_max or (n == n_max - 1 and l in "df") or (n == n_max - 2 and l == "f"):
                table[z, offset[l] + occ - 1] = 1.0
    table.setflags(write=False)
    return table


@register
class OFMDescriptor(StructureDescriptor):
    name = "ofm"
    version = "1"

    def __init__(self):
        self.params = {}

    def feature_names(self) -> list[str]:
        return [f"ofm_{a}_{b}" for a in ORBITAL_LABELS for b in ORBITAL_LABELS]

    def _row(self, structure) -> np.ndarray | None:
        from pymatgen.analysis.local_env import VoronoiNN

        if any(site.specie.Z > 94 for site in structure):
            return None
        onehot = valence_one_hot()
        ofm = np.zeros((32, 32))
        nn = VoronoiNN(allow_pathological=True).get_all_nn_info(structure)
        for site, neighbours in zip(structure, nn):
            field = np.zeros(32)
            for nb in neighbours:
                # the neighbour's own image, not the minimum-image distance (small cells)
                r = np.linalg.norm(nb["site"].coords - site.coords) * ANG_TO_BOHR
                field += onehot[nb["site"].specie.Z] * nb["weight"] / r
            ofm += np.outer(field, onehot[site.specie.Z])
        ofm /= len(structure)
        return ofm.ravel() if ofm.any() else None
