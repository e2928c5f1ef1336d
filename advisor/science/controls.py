"""The controls every identification must beat: what an experimenter gets without recording a single unit.

* **Behaviour**: the whole learning curve, observed at every checkpoint (a real experiment sees the animal's
  performance every session at no recording cost): log training loss, training metric and test metric at all
  of the bank's checkpoints, initialization included.
* **Hyperparameters**: log learning rate, log batch size and log init scale of each network (what a population
  that gave the rules different ranges would leak).

Each is scored by the better of a linear (:data:`LINEAR`) and a nonlinear (:data:`NONLINEAR`) classifier on the
same splits as the protocol; the better one is reported, so the control is as strong as these two make it
(choosing the better of two on the test splits favours the control: a conservative choice).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from simulator.bank import TrajectoryBank

LINEAR = "logreg"
NONLINEAR = "rf"
CONTROL_CLASSIFIERS = (LINEAR, NONLINEAR)
CONTROLS = ("behaviour", "hyperparameters")
DESCRIPTIONS = {
    "behaviour": "the whole learning curve (log training loss, training and test metric at every checkpoint)",
    "hyperparameters": "the hyperparameters alone (log learning rate, batch size, init scale)",
}


CONTROL_LABELS = {"behaviour": "behaviour (whole learning curve)", "hyperparameters": "hyperparameters alone"}


def behaviour_features(bank: TrajectoryBank, rows: np.ndarray | None = None) -> np.ndarray:
    """(N, T, 3) float32: log training loss, training metric and test metric at every checkpoint.

    A diverged network's non-finite values become the largest finite value of that channel plus one (its
    behaviour is visibly broken, which an experimenter would see), so the control keeps every network.
    """
    loss = np.asarray(bank["loss"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_loss = np.log(np.maximum(loss, 1e-12))
    out = np.stack([log_loss, np.asarray(bank["metric"], dtype=np.float64),
                    np.asarray(bank["test_metric"], dtype=np.float64)], axis=-1)
    if rows is not None:
        out = out[rows]
    for k in range(out.shape[-1]):
        channel = out[..., k]
        finite = np.isfinite(channel)
        if not finite.all():
            fill = float(channel[finite].max()) + 1.0 if finite.any() else 0.0
            out[..., k] = np.where(finite, channel, fill)
    return out.astype(np.float32)


def hyperparameter_features(metadata: Any) -> np.ndarray:
    """(N, 1, 3) float32: log learning rate, log2 batch size and log init scale of every network."""
    cols = [np.log(metadata["lr"].to_numpy(dtype=float)), np.log2(metadata["batch_size"].to_numpy(dtype=float)),
            np.log(metadata["init_scale"].to_numpy(dtype=float))]
    return np.stack(cols, axis=-1)[:, None, :].astype(np.float32)


def controls_document(controls: Mapping[str, Any]) -> dict[str, Any]:
    """``{"behaviour": {"accuracy", "ci", "classifier", "candidates"}, "hyperparameters": {...}}``."""
    return {name: c.to_dict() for name, c in controls.items()}


def strongest_document(controls: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The control (name, entry) with the highest upper CI bound in a controls document, or None."""
    if not controls:
        return None
    name = max(controls, key=lambda k: (controls[k]["ci"][1], controls[k]["accuracy"]))
    return name, controls[name]
