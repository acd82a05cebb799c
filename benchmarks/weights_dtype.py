"""Weights stored in 16 bits: how far predictions and neural features move from float32.

For every trained model of a results folder's shards (``results/models/``: the smoke config's or
the main job's), the float32 network of its shard's weights file is compared with the same network
whose weights were rounded as a library stores them in float16 and in bfloat16
(``shotgun.library.packs.stored``), on the inputs of the model's prepared training table
(``results/data/<dataset>/<property>.parquet``): the largest change of a prediction relative to
the spread (standard deviation) of the float32 predictions, and of a neural feature (the
pre-activations of the last 1 .. all hidden layers) relative to the spread of the float32
features. Prints JSON (last line): the worst and median of each over models, and the bytes per
model.

    python benchmarks/weights_dtype.py --results results/smoke
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True)
    a = p.parse_args()

    import pandas as pd
    from safetensors.torch import load_file

    from shotgun.library import ModelCard, Predictor
    from shotgun.library.packs import stored

    results = Path(a.results)
    errors = {d: {"prediction": [], "features": []} for d in ("float16", "bfloat16")}
    sizes = {"float32": [], "float16": [], "bfloat16": []}
    n = 0
    for path in sorted((results / "models").rglob("*.json")):
        card = ModelCard.read(path)
        if card.weights is None:
            continue
        n += 1
        tensors = load_file(str(path.parent / card.weights))
        ref = Predictor(card, tensors)
        table = pd.read_parquet(results / "data" / card.dataset / f"{card.property}.parquet")
        X, ok = ref.descriptors(table["input"].tolist())
        X = X[ok]
        depths = range(1, ref.n_hidden + 1)
        y_ref, F_ref = ref.predict_descriptors(X), ref.features_at(X, depths)
        sizes["float32"].append(sum(t.nbytes for t in tensors.values()))
        for dtype, err in errors.items():
            low = {k: stored(t, dtype) if k.startswith("net.") else t for k, t in tensors.items()}
            sizes[dtype].append(sum(t.nbytes for t in low.values()))
            got = Predictor(card, low)
            err["prediction"].append(
                float(np.abs(got.predict_descriptors(X) - y_ref).max() / y_ref.std())
            )
            err["features"].append(
                max(
                    float(np.abs(F - R).max() / R.std())
                    for F, R in zip(got.features_at(X, depths), F_ref)
                )
            )
    out = {
        "results": str(results),
        "models": n,
        "bytes_per_model": {d: int(np.mean(s)) for d, s in sizes.items()},
        **{
            dtype: {
                f"{what}_{stat}": float(f(v))
                for what, v in err.items()
                for stat, f in (("max", np.max), ("median", np.median))
            }
            for dtype, err in errors.items()
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
