import json
from pathlib import Path

import numpy as np
import pytest

from shotgun.data import structure_to_input
from shotgun.descriptors import featurize, get_descriptor
from shotgun.descriptors.structure import ANG_TO_BOHR

STRUCTURES = Path(__file__).parents[1] / "data" / "structures" / "megnet_bulk_moduli_100.json"
# valence one-hot indices: s1..s2 -> 0..1, p1..p6 -> 2..7, d1..d10 -> 8..17, f1..f14 -> 18..31
ONE_HOT = {"Na": [0], "Cs": [0], "Cl": [1, 6], "Si": [1, 3]}  # 3s1, 6s1, 3s2 3p5, 3s2 3p2


def one_hot(symbol):
    v = np.zeros(32)
    v[ONE_HOT[symbol]] = 1
    return v


def crystals():
    from pymatgen.core import Lattice, Structure

    return {
        "NaCl": Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
        ),
        "CsCl": Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "Si": Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]]),
    }


def solid_angle(center, polygon):
    """Solid angle of a planar convex polygon seen from ``center`` (Van Oosterom-Strackee)."""
    mid = polygon.mean(axis=0)
    normal = np.cross(polygon[1] - polygon[0], polygon[2] - polygon[0])
    e1 = (polygon[0] - mid) / np.linalg.norm(polygon[0] - mid)
    e2 = np.cross(normal / np.linalg.norm(normal), e1)
    order = np.argsort(np.arctan2((polygon - mid) @ e2, (polygon - mid) @ e1))
    poly = polygon[order] - center
    total = 0.0
    for a, b in zip(poly, np.roll(poly, -1, axis=0)):
        c = mid - center
        la, lb, lc = map(np.linalg.norm, (a, b, c))
        num = abs(a @ np.cross(b, c))
        den = la * lb * lc + (a @ b) * lc + (a @ c) * lb + (b @ c) * la
        total += 2 * np.arctan2(num, den)
    return total


def ofm_by_definition(structure):
    """Mean over sites of sum_k O_k O_i^T w_k / r_k with Voronoi faces from scipy (Qhull)."""
    from scipy.spatial import Voronoi

    big = structure * (5, 5, 5)
    vor = Voronoi(big.cart_coords)
    centre = structure.lattice.get_cartesian_coords([2, 2, 2])  # origin of the middle copy
    total = np.zeros((32, 32))
    for site in structure:
        i = int(np.argmin(np.linalg.norm(big.cart_coords - (site.coords + centre), axis=1)))
        faces = [
            (j if k == i else k, vs)
            for (j, k), vs in zip(vor.ridge_points, vor.ridge_vertices)
            if i in (j, k)
        ]
        angles = np.array([solid_angle(big.cart_coords[i], vor.vertices[vs]) for _, vs in faces])
        assert angles.sum() == pytest.approx(4 * np.pi, rel=1e-6)
        weights = angles / angles.max()
        field = np.zeros(32)
        for (k, _), w in zip(faces, weights):
            r = np.linalg.norm(big.cart_coords[k] - big.cart_coords[i]) * ANG_TO_BOHR
            field += one_hot(big[k].specie.symbol) * w / r
        total += np.outer(field, one_hot(site.specie.symbol))
    return total / len(structure)


@pytest.fixture(scope="module")
def structures():
    return crystals()


def test_ofm_nacl_by_hand(structures):
    X, ok = get_descriptor("ofm").featurize([structure_to_input(structures["NaCl"])])
    # rock salt: 6 neighbours of the other element on the faces of a cube, all weights 1
    r = 5.64 / 2 * ANG_TO_BOHR
    na, cl = one_hot("Na"), one_hot("Cl")
    expected = (np.outer(cl, na) + np.outer(na, cl)) * 6 / r / 2
    assert ok.all()
    np.testing.assert_allclose(X[0].reshape(32, 32), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["NaCl", "CsCl", "Si"])
def test_ofm_equals_definition_and_matminer(structures, name):
    from matminer.featurizers.structure import OrbitalFieldMatrix

    s = structures[name]
    X, ok = get_descriptor("ofm").featurize([structure_to_input(s)])
    assert ok.all() and X.shape == (1, 1024) and np.count_nonzero(X) > 0
    np.testing.assert_allclose(X[0].reshape(32, 32), ofm_by_definition(s), rtol=1e-5, atol=1e-7)
    # matminer converts with the "Angstrom star" (1 + 1.5e-5 Å): agreement to 1e-4
    ref = OrbitalFieldMatrix().featurize(s.copy())
    np.testing.assert_allclose(X[0], ref, rtol=1e-4, atol=1e-7)


def test_cscl_has_two_neighbour_shells(structures):
    X, _ = get_descriptor("ofm").featurize([structure_to_input(structures["CsCl"])])
    m = X[0].reshape(32, 32)
    cs_cs = m[0, 0]  # s1 x s1 only from Cs-Cs (second shell, square faces)
    assert cs_cs > 0
    d1 = 4.12 * np.sqrt(3) / 2 * ANG_TO_BOHR  # 8 hexagonal faces, weight 1
    assert m[1, 0] == pytest.approx(8 / d1 / 2, rel=1e-5)  # Cl s2 row, Cs s1 column


def test_rdf_by_hand(structures):
    from matminer.featurizers.structure import RadialDistributionFunction

    d = get_descriptor("rdf")
    assert d.n_features == 200 and d.feature_names()[28] == "rdf_2.80-2.90"
    s = structures["NaCl"]
    X, ok = d.featurize([structure_to_input(s), structure_to_input(s.get_primitive_structure())])
    assert ok.all() and np.isfinite(X).all()
    rho = 8 / 5.64**3
    assert X[0, 28] == pytest.approx(6 / (4 / 3 * np.pi * (2.9**3 - 2.8**3)) / rho, rel=1e-5)
    assert (X[0, :28] == 0).all()
    np.testing.assert_allclose(X[0], X[1], rtol=1e-5, atol=1e-6)  # independent of the cell
    assert X[0, 150:].mean() == pytest.approx(1, abs=0.1)
    for s in structures.values():
        X, _ = d.featurize([structure_to_input(s)])
        ref = RadialDistributionFunction(cutoff=20, bin_size=0.1).featurize(s) / len(s)
        np.testing.assert_allclose(X[0], ref, rtol=1e-5, atol=1e-6)


def test_invalid_structures_are_flagged(structures):
    from pymatgen.core import Lattice, Structure

    disordered = Structure(
        Lattice.cubic(4), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    good = structure_to_input(structures["Si"])
    inputs = [good, "", "{not json", json.dumps({"a": 1}), structure_to_input(disordered), "Si"]
    for name in ("rdf", "ofm"):
        X, ok = get_descriptor(name).featurize(inputs)
        np.testing.assert_array_equal(ok, [True] + [False] * 5)
        assert np.isnan(X[1:]).all()
    assert get_descriptor("ofm").kinds == ("structure",)


def test_bundled_structures_never_all_zero():
    if not STRUCTURES.is_file():
        pytest.skip("bundled structures not present")
    from pymatgen.core import Structure

    data = json.loads(STRUCTURES.read_text())["structures"][:8]
    inputs = [structure_to_input(Structure.from_dict(s)) for s in data]
    X, ok = featurize(get_descriptor("ofm"), inputs)
    assert ok.all()
    assert (np.abs(X).sum(axis=1) > 0).all()
    R, okr = get_descriptor("rdf").featurize(inputs)
    assert okr.all() and (R.sum(axis=1) > 0).all()
    # slow descriptors go parallel from a few structures on
    R2, ok2 = featurize(get_descriptor("rdf"), inputs * 3, n_workers=2)
    assert ok2.all()
    np.testing.assert_array_equal(R2, np.concatenate([R] * 3))
