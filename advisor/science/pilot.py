"""Pilot data for planning: the rig's own noise and unit gains, measured from repeated presentations.

``advisor plan --pilot RECORDING`` replaces two of the modality's planning numbers with what a pilot session
shows (the rest of the modality, its limits and costs, stay):

* **Single-presentation noise.** Gaussian (imaging): for each unit, the trial-to-trial SD (pooled over stimuli,
  from the presentations of each stimulus) relative to the unit's *signal* spread, the SD across stimuli of its
  mean response with the noise's share removed (``var(means) − (P − 1)/P · noise² / r`` for P stimuli and r
  presentations, the classical correction), the same unit of noise the simulation uses
  (``advisor.science.protocol.reference_spread``); the median over units.
  Poisson (electrophysiology): the mean spike count per stimulus and presentation.
* **Unit gains.** How much more the units' signal spreads vary (SD of their log) than those of simulated units
  do at the start of learning: ``sqrt(max(0, var_pilot − var_simulated))``. The simulated units' own variation is
  subtracted, so that the unknown gain adds only what the rig adds; a pilot no more varied than the simulations
  gives 0.

Only the first session of the pilot is used (a pilot is usually one session, before training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from advisor.errors import AdvisorError
from advisor.science.recordings import LabRecording

if TYPE_CHECKING:
    from simulator.bank import TrajectoryBank

__all__ = ["MIN_PILOT_UNITS", "PilotEstimate", "check_pilot", "estimate_pilot", "simulated_log_spread_var"]

MIN_PILOT_UNITS = 5
"""Fewest units with a measurable signal a pilot needs."""


@dataclass(frozen=True)
class PilotEstimate:
    """What a pilot recording says about the rig.

    Attributes:
        source: the recording's files.
        noise_model: the modality's noise model the numbers are for.
        single_trial_noise: Gaussian, noise SD of one presentation relative to the unit's signal spread (median over
            units); Poisson, the mean spike count per stimulus and presentation.
        unit_gain_sd: SD of the log unit gain beyond the simulated units' own variation.
        n_units: units that entered the estimate; n_presentations the presentations of each stimulus.
        per_unit_noise: (lower quartile, median, upper quartile) of the units' relative noise (Gaussian).
        log_spread_sd: (pilot, simulated) SDs of the log signal spread across units.
    """

    source: str
    noise_model: str
    single_trial_noise: float
    unit_gain_sd: float
    n_units: int
    n_presentations: int
    per_unit_noise: tuple[float, float, float] | None
    log_spread_sd: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "noise_model": self.noise_model,
                "single_trial_noise": self.single_trial_noise, "unit_gain_sd": self.unit_gain_sd,
                "n_units": self.n_units, "n_presentations": self.n_presentations,
                "per_unit_noise": list(self.per_unit_noise) if self.per_unit_noise else None,
                "log_spread_sd": list(self.log_spread_sd)}


def simulated_log_spread_var(bank: TrajectoryBank, observable: str = "activations") -> float:
    """The variance across units of the log SD across probe stimuli of simulated units at the first checkpoint
    (within each network and layer group, then the median over them): the simulated units' own variation."""
    first = np.asarray(bank[observable][:, 0], dtype=np.float64)  # (N, G, U, P)
    spread = first.std(axis=-1)
    out = []
    for n in range(spread.shape[0]):
        for g in range(spread.shape[1]):
            s = spread[n, g]
            s = s[np.isfinite(s) & (s > 0)]
            if len(s) >= MIN_PILOT_UNITS:
                out.append(np.var(np.log(s)))
    return float(np.median(out)) if out else 0.0


def check_pilot(recording: LabRecording) -> None:
    """A one-line error unless ``recording`` has at least 2 presentations of each of at least 2 stimuli (checked
    before any bank is opened)."""
    _, _, n_stimuli, n_rep = recording.responses.shape
    if n_rep < 2:
        raise AdvisorError(f"pilot {recording.source}: {n_rep} presentation of each stimulus; a pilot needs at least "
                           "2 to measure trial-to-trial noise")
    if n_stimuli < 2:
        raise AdvisorError(f"pilot {recording.source}: {n_stimuli} stimulus; a pilot needs at least 2 to measure how "
                           "responses spread across stimuli")


def estimate_pilot(recording: LabRecording, noise_model: str, simulated_var: float) -> PilotEstimate:
    """Estimate the single-presentation noise and the unit-gain spread from ``recording``'s first session.

    Raises:
        AdvisorError: fewer than 2 presentations of each stimulus, fewer than 2 stimuli, or fewer than
            :data:`MIN_PILOT_UNITS` units whose responses vary across stimuli.
    """
    check_pilot(recording)
    where = recording.source
    r = recording.responses[0]  # (U, P, R)
    _, n_stimuli, n_rep = r.shape
    means = r.mean(axis=-1)  # (U, P)
    noise_var = r.var(axis=-1, ddof=1).mean(axis=-1)  # (U,) pooled over stimuli
    # the spread over stimuli as the simulation defines it (SD with ddof 0, reference_spread), less the share the
    # noise of the means adds to it in expectation: (P - 1) / P · noise² / r
    signal_var = means.var(axis=-1) - noise_var / n_rep * (n_stimuli - 1) / n_stimuli
    ok = signal_var > 0
    if int(ok.sum()) < MIN_PILOT_UNITS:
        raise AdvisorError(f"pilot {where}: {int(ok.sum())} unit{'s' if ok.sum() != 1 else ''} respond more to some "
                           f"stimuli than to others beyond the noise; at least {MIN_PILOT_UNITS} are needed")
    log_spread = 0.5 * np.log(signal_var[ok])
    pilot_var = float(np.var(log_spread))
    gain_sd = float(np.sqrt(max(0.0, pilot_var - simulated_var)))
    per_unit = None
    if noise_model == "poisson":
        level = float(r.mean())
        if not level > 0:
            raise AdvisorError(f"pilot {where}: no spikes; a Poisson pilot needs spike counts")
    else:
        relative = np.sqrt(noise_var[ok] / signal_var[ok])
        q1, median, q3 = (float(v) for v in np.quantile(relative, [0.25, 0.5, 0.75]))
        level, per_unit = median, (q1, median, q3)
    return PilotEstimate(where, noise_model, level, gain_sd, int(ok.sum()), int(n_rep), per_unit,
                         (float(np.sqrt(pilot_var)), float(np.sqrt(simulated_var))))
