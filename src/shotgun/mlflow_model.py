"""A library model as an MLflow pyfunc model, by MLflow's models-from-code: MLflow copies this
file into the logged model and runs it when the model is loaded, so nothing is pickled. It loads
the model's card and safetensors weights (the model's artifacts ``card`` and ``weights``, the
weights checked against the card's sha256) with shotgun's own loader and predicts with it.

>>> model = mlflow.pyfunc.load_model("runs:/<run id>/model")
>>> model.predict(["CCO", "c1ccccc1"])          # or a DataFrame of one column

Predictions are in the property's unit, NaN where an input cannot be featurized. Logged by
``shotgun library log-pyfunc`` (:func:`shotgun.tracking.log_pyfunc`); shotgun never loads it.
"""

from __future__ import annotations

from pathlib import Path

import mlflow


class LibraryModel(mlflow.pyfunc.PythonModel):
    """A library model: SMILES or formulas in, predictions out."""

    def load_context(self, context) -> None:
        from shotgun.checksums import sha256
        from shotgun.library import LibraryError, ModelCard, Predictor

        card = ModelCard.read(Path(context.artifacts["card"]))
        weights = Path(context.artifacts["weights"])
        if sha256(weights) != card.weights_sha256:
            raise LibraryError(f"{weights}: checksum differs from model {card.model_id}'s card")
        self.model = Predictor(card, weights)

    def predict(self, context, model_input: list[str], params=None) -> list[float]:
        """Predictions for a list of inputs (MLflow gives a one-column DataFrame as a list)."""
        return self.model.predict(list(model_input)).tolist()


mlflow.models.set_model(LibraryModel())
