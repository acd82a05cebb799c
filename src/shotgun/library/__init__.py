"""The model library: model cards, the checksummed store and its index, weights packed a shard
to a file, incremental atomic builds, packing and unpacking, and loaded models that predict and
give neural features.

>>> lib = Library.open("results/library")
>>> best = lib.query(kind="molecule", property="gap", top=3)
>>> model = lib.load(best.model_id[0])
>>> model.predict(["CCO", "c1ccccc1"])

The card module loads without pandas or torch; the others load when first used.
"""

from ..lazy import lazy_exports
from .card import CARD_SCHEMA, INDEX_COLUMNS, CardError, LibraryError, ModelCard

__all__ = [
    "CARD_SCHEMA",
    "INDEX_COLUMNS",
    "CardError",
    "Library",
    "LibraryError",
    "ModelCard",
    "Predictor",
    "build_library",
    "diff_libraries",
    "features_many",
    "from_mlflow",
    "pack",
    "shard_models",
    "unpack",
    "write_library",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Library": ".store",
        "diff_libraries": ".store",
        "build_library": ".build",
        "from_mlflow": ".build",
        "shard_models": ".build",
        "write_library": ".build",
        "pack": ".archive",
        "unpack": ".archive",
        "Predictor": ".predictor",
        "features_many": ".predictor",
    },
)
