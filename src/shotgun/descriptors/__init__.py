"""Descriptors: map material strings (SMILES, polymer SMILES, formulas, structures) to arrays.

>>> d = get_descriptor("ecfp", radius=2)
>>> X, ok = featurize(d, ["CCO", "not a smiles"])
>>> X, ok, spec, names = featurize_inputs(["CCO"], "ecfp", cache_dir="cache")

Every descriptor exposes ``name``, ``version``, ``kinds`` (the input kinds it
accepts: molecule, polymer, inorganic, structure), ``params``, ``spec()``,
``feature_space()``, ``feature_names()`` and ``featurize(strings) -> (X, ok)``
where ``X`` is float32 of shape (n, n_features) and ``ok`` flags the rows that
could be featurized (other rows are NaN). Heavy libraries (RDKit, pymatgen,
Dask) are imported only when featurizing. ``base.py`` explains how to add one.

=======================  ==========================  ================================
name                     kinds                       features (default params)
=======================  ==========================  ================================
``composition``          inorganic                   58 element features x stats (290)
``organic_composition``  molecule, polymer           same layout as ``composition``
``ecfp``, ``fcfp``       molecule, polymer           2,048 (Morgan counts, radius 3)
``atom_pair``            molecule, polymer           2,048 counts
``torsion``              molecule, polymer           2,048 counts
``rdkit_fp``             molecule, polymer           2,048 bits
``maccs``                molecule, polymer           167 bits
``rdkit_2d``             molecule, polymer           217 RDKit descriptors
``rdf``                  structure                   200 (0-20 Å, 0.1 Å bins)
``ofm``                  structure                   1,024 (32 x 32)
=======================  ==========================  ================================

Two descriptors whose ``feature_space()`` strings are equal give vectors of the
same layout and meaning, whatever their names and input kinds (``composition``
and ``organic_composition`` with the same ``stats``); ``for_kind(spec, kind)``
returns the descriptor that brings inputs of ``kind`` into the feature space of
``spec``.

Modules: ``base`` (the abstract descriptor, registry, specs), the families (``composition``,
``organic``, ``fingerprints``, ``rdkit_2d``, ``structure``), ``compute`` (parallel featurization
and the cached ``featurize_inputs``), ``cache`` (content-addressed feature cache), ``tables``
(feature tables as Parquet).
"""

# The families register themselves on import, in this order (the grid's `applicable` order).
from . import composition, organic, fingerprints, rdkit_2d, structure  # noqa: F401, I001
from .base import (
    DESCRIPTORS,
    Descriptor,
    canonical_json,
    for_kind,
    from_spec,
    get_descriptor,
    register,
)
from .cache import FeatureCache
from .compute import featurize, featurize_inputs, make_descriptor
from .tables import read_features, write_features

__all__ = [
    "DESCRIPTORS",
    "Descriptor",
    "FeatureCache",
    "canonical_json",
    "featurize",
    "featurize_inputs",
    "for_kind",
    "from_spec",
    "get_descriptor",
    "make_descriptor",
    "read_features",
    "register",
    "write_features",
]
