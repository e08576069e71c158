"""How unsure the segmentation is, and how much that doubt moves the metrics.

Three things, all from the network's class probabilities:

* **Calibration.** Softmax probabilities of a network are over-confident;
  temperature scaling (Guo et al., ICML 2017) divides the logits by one number
  T fitted on held-out data (:func:`fit_temperature`); the model card stores T
  (``calibration: temperature``) and the segment stage writes calibrated
  probabilities (:func:`calibrate`).
* **Where the network is unsure**: the normalised entropy and the margin
  between the two most likely phases per voxel; per slice, their means and the
  share of *uncertain* voxels (calibrated top probability below
  :data:`UNCERTAIN_BELOW`) of each predicted phase (:func:`slice_uncertainty`).
  The slices the workflow suggests for annotation are the most uncertain ones
  (:func:`suggest_slices`).
* **A segmentation error bar on every metric.** What moves a metric is not
  the scattered doubt of single voxels, which averages out, but a bias of the
  boundaries that runs through the whole volume (a network that places every
  AM/CBD boundary a little too far out). Such a bias is a shift ``b`` of the
  log-probabilities of the phases (labels = argmax(log p + b)); its spread
  over held-out stacks with known truth, ``sigma_i`` along the two orthonormal
  directions of the shift (:data:`SHIFT_DIRECTIONS`; the model card's
  ``calibration: boundary_shift_sd``), is the calibration: the RMS of the
  shifts :func:`fit_boundary_shift` finds, scaled so that the volume-fraction
  errors of those stacks are one sd on average (:func:`fit_shift_sd`); then
  each family of metrics whose coverage is checked (fractions, d50, pore and
  electronic transport, :data:`METRIC_FAMILIES`) gets a widening factor of
  its own, split-conformal, so that 90 % of its held-out errors lie within
  2 sd (:func:`error_scale`; the card's ``family_scale``). A metric's segmentation sd is then
  propagated to first order (the delta method) from the metric of two volumes
  whose boundaries are moved by ``sigma_i`` along direction i (to the side
  where the held-out stacks' truth lay on average, the sign of ``sigma_i``):
  sd = sqrt(sum_i (m_i - m_0)^2) (:func:`segmentation_sd`). The particle
  metrics add two more terms, the same volume split into particles with the
  marker height moved by the separation doubt
  (:func:`fibrecon.metrics.segmentation_uncertainty`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fibrecon import PHASES
from fibrecon.settings import StageSettings
from fibrecon.volume import VolumeSettings, relabel_small_islands

__all__ = ["UNCERTAIN_BELOW", "SHIFT_DIRECTIONS", "PERCOLATION_BRACKET_SD", "percolation_doubt", "AnnotateSettings", "calibrate",
           "fit_temperature", "normalised_entropy", "margin", "slice_uncertainty",
           "uncertain_fractions", "UNCERTAIN_WARN_ABOVE", "UNCERTAIN_CBD_WARN_ABOVE",
           "uncertainty_warnings", "probe_slices", "uncertain_cbd_share",
           "AGREEMENT_CBD_WARN_BELOW", "cbd_agreement", "agreement_warning",
           "domain_widening", "WIDENING_WARN_ABOVE",
           "suggest_slices", "shifted_labels", "shifted_volumes", "cleaned_shift",
           "fit_boundary_shift",
           "phase_fractions", "fit_fraction_shift",
           "fraction_sd", "fit_shift_sd", "METRIC_FAMILIES", "metric_family", "segmentation_sd",
           "error_scale", "covered", "coverage"]

LOG = logging.getLogger(__name__)  # a child of the rule log's "fibrecon" logger

#: A voxel is *uncertain* when its calibrated top probability is below this.
UNCERTAIN_BELOW = 0.8

#: Orthonormal directions of a shift of the three phases' log-probabilities
#: (a shift common to all three changes nothing): pore against AM, and CBD
#: against the other two.
SHIFT_DIRECTIONS = (np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0),
                    np.array([1.0, 1.0, -2.0]) / np.sqrt(6.0))


@dataclass(frozen=True, kw_only=True)
class AnnotateSettings(StageSettings):
    """Settings of the annotate rule (``annotate:`` in the config).

    Attributes
    ----------
    slices : int
        Slices suggested for annotation per sample.
    spacing : int
        Suggested slices lie at least this many slices apart (neighbours
        look alike).
    """

    SECTION = "annotate"
    slices: int = 5
    spacing: int = 5


def _log(prob: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(prob, np.float32), 1e-7, None))


def calibrate(prob: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities, softmax(log p / T), along axis 0.

    Exact for softmax outputs: log p differs from the logits by a constant per voxel.

    Examples
    --------
    >>> p = calibrate(np.array([[0.9], [0.05], [0.05]]), 2.0)
    >>> round(float(p[0, 0]), 2)
    0.68
    """
    if temperature == 1.0:
        return np.asarray(prob, np.float32)
    z = _log(prob) / float(temperature)
    z -= z.max(axis=0, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)


def fit_temperature(prob: np.ndarray, truth: np.ndarray, *, max_voxels: int = 2_000_000,
                    seed: int = 0) -> float:
    """The temperature that minimises the negative log-likelihood of the truth.

    Parameters
    ----------
    prob : ndarray, (classes, ...)
        Uncalibrated probabilities of held-out data.
    truth : ndarray of int, (...)
        Their true labels (255 = not annotated, left out).
    max_voxels : int
        A seeded sample of this many voxels is used.

    Returns
    -------
    float
        T (> 1: the network was over-confident).
    """
    from scipy.optimize import minimize_scalar

    logp = _log(prob).reshape(prob.shape[0], -1)
    t = np.asarray(truth).reshape(-1).astype(np.int64)
    keep = np.nonzero(t < prob.shape[0])[0]
    if keep.size > max_voxels:
        keep = np.random.default_rng(seed).choice(keep, max_voxels, replace=False)
    logp, t = logp[:, keep], t[keep]

    def nll(log_t):
        z = logp / np.exp(log_t)
        z = z - z.max(0)
        return float(-(z[t, np.arange(t.size)] - np.log(np.exp(z).sum(0))).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def normalised_entropy(prob: np.ndarray) -> np.ndarray:
    """Entropy of the class probabilities over log(classes): 0 certain, 1 uniform."""
    p = np.clip(np.asarray(prob, np.float32), 1e-7, 1.0)
    return (-(p * np.log(p)).sum(axis=0) / np.log(p.shape[0])).astype(np.float32)


def margin(prob: np.ndarray) -> np.ndarray:
    """Top probability minus the second: 0 a tie, 1 certain."""
    top2 = np.sort(np.asarray(prob, np.float32), axis=0)[-2:]
    return (top2[1] - top2[0]).astype(np.float32)


def slice_uncertainty(prob: np.ndarray) -> dict:
    """Uncertainty summary of one slice's calibrated probabilities (classes, y, x).

    Returns
    -------
    dict
        ``mean_entropy``, ``mean_margin``, and per predicted phase the voxels
        (``voxels_<phase>``) and the uncertain ones among them
        (``uncertain_<phase>``, top probability below :data:`UNCERTAIN_BELOW`).
    """
    prob = np.asarray(prob, np.float32)
    labels, top = prob.argmax(0), prob.max(0)
    out = {"mean_entropy": float(normalised_entropy(prob).mean()),
           "mean_margin": float(margin(prob).mean())}
    unsure = top < UNCERTAIN_BELOW
    for p, name in PHASES.items():
        out[f"voxels_{name}"] = int((labels == p).sum())
        out[f"uncertain_{name}"] = int(((labels == p) & unsure).sum())
    return out


def uncertain_fractions(table) -> dict:
    """Share of uncertain voxels per predicted phase (and overall) of a per-slice table.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of :func:`slice_uncertainty`.

    Returns
    -------
    dict
        ``uncertain_fraction_<phase>`` and ``uncertain_fraction``.
    """
    out = {}
    for name in PHASES.values():
        n = float(table[f"voxels_{name}"].sum())
        out[f"uncertain_fraction_{name}"] = float(table[f"uncertain_{name}"].sum() / n) if n \
            else float("nan")
    total = sum(float(table[f"voxels_{name}"].sum()) for name in PHASES.values())
    out["uncertain_fraction"] = float(sum(table[f"uncertain_{n}"].sum() for n in PHASES.values())
                                      / total) if total else float("nan")
    return out


#: An overall share of uncertain voxels above this is logged as a warning by segment:
#: on the demo about 12 % are, on stacks unlike the training data more.
UNCERTAIN_WARN_ABOVE = 0.25

#: A share of uncertain voxels among those predicted CBD above this is logged as a warning by
#: segment (``benchmarks/cross_domain.py signals``, 1 + 3 kV model): 0.13-0.37 on the
#: simulator's held-out stacks (CBD IoU 0.65-0.88), 0.45-0.88 on the 12 foreign renders
#: (CBD IoU 0.03-0.36, 11 of 12 above 0.5), 0.27-0.49 on the six demo samples (CBD IoU
#: 0.53-0.73: close below it). It misses the nano-CT slices (0.25-0.36, CBD IoU 0.05-0.42).
UNCERTAIN_CBD_WARN_ABOVE = 0.5


def uncertainty_warnings(shares: dict, limit: float = UNCERTAIN_WARN_ABOVE,
                         cbd_limit: float = UNCERTAIN_CBD_WARN_ABOVE) -> list[str]:
    """Warnings when the share of uncertain voxels (:func:`uncertain_fractions`) is large,
    overall or among the voxels predicted CBD (the phase that fails first on foreign data).

    Examples
    --------
    >>> uncertainty_warnings({"uncertain_fraction": 0.31})[0][:37]
    '31.0 % of the voxels are uncertain (c'
    >>> uncertainty_warnings({"uncertain_fraction": 0.12, "uncertain_fraction_cbd": 0.3})
    []
    >>> uncertainty_warnings({"uncertain_fraction": 0.12, "uncertain_fraction_cbd": 0.7})[0][:40]
    '70.0 % of the voxels predicted CBD are u'
    """
    out = []
    share = shares.get("uncertain_fraction", float("nan"))
    if share > limit:
        out.append(f"{100 * share:.1f} % of the voxels are uncertain (calibrated top probability < "
                   f"{UNCERTAIN_BELOW}; above {100 * limit:.0f} %): the stack may look unlike the "
                   "network's training data; check the QC figure and correct a few slices "
                   "(results/annotate/<sample>/)")
    cbd = shares.get("uncertain_fraction_cbd", float("nan"))
    if cbd > cbd_limit:
        out.append(f"{100 * cbd:.1f} % of the voxels predicted CBD are uncertain (calibrated top "
                   f"probability < {UNCERTAIN_BELOW}; above {100 * cbd_limit:.0f} %): on stacks "
                   "like this the networks missed much of the CBD (CBD IoU 0.03-0.36 for the "
                   "shipped model on foreign renders, 0.10-0.63 for its fallback: "
                   "benchmarks/RESULTS.md); expect the CBD fraction too low and its network "
                   "cut; check the QC figure and correct a few slices "
                   "(results/annotate/<sample>/)")
    return out


def probe_slices(n_slices: int, every: int = 8, most: int = 32) -> list[int]:
    """The slices a probe looks at: every ``every``-th, at most ``most`` spread over the stack.

    Examples
    --------
    >>> probe_slices(20), probe_slices(1), len(probe_slices(1000))
    ([0, 8, 16], [0], 32)
    """
    picked = list(range(0, int(n_slices), every))
    if len(picked) > most:
        picked = sorted({int(round(v)) for v in np.linspace(0, n_slices - 1, most)})
    return picked


def uncertain_cbd_share(probabilities) -> float:
    """Share of uncertain voxels (calibrated top probability < :data:`UNCERTAIN_BELOW`) among
    those predicted CBD, over an iterable of calibrated (classes, y, x) probabilities: the
    ``uncertain_fraction_cbd`` of :func:`uncertain_fractions` (segment's probe; the CBD warning
    of :func:`uncertainty_warnings` reads the same share over the whole stack).

    Examples
    --------
    >>> p = np.zeros((3, 1, 4), np.float32)
    >>> p[2] = [0.9, 0.6, 0.55, 0.95]; p[1] = 1 - p[2]
    >>> uncertain_cbd_share([p])
    0.5
    """
    import pandas as pd

    rows = [slice_uncertainty(prob) for prob in probabilities]  # as the CBD warning counts
    return uncertain_fractions(pd.DataFrame(rows))["uncertain_fraction_cbd"]


#: Two networks trained apart (the model and its fallback) that label the same probe slices'
#: CBD with an IoU below this disagree on the stack: segment warns. On the 47 test stacks of
#: ``benchmarks/cross_domain.py agreement`` (2026-12-07) every stack whose agreement fell below
#: it had a model CBD IoU of 0.51 or less (simulator stacks of particles finer than the
#: training data, foreign renders, 9 of the 12 real nano-CT slices, which no other label-free
#: signal caught); the 8 stacks with a model CBD IoU of 0.6 or more all gave 0.52 or more.
AGREEMENT_CBD_WARN_BELOW = 0.4


def cbd_agreement(labels_a, labels_b) -> float:
    """IoU of the CBD (label 2) of two label images or stacks of one stack, e.g. the labels of
    two networks on the same probe slices; 1.0 where neither has any CBD.

    Examples
    --------
    >>> a = np.array([[2, 2, 1, 0]]); b = np.array([[2, 1, 2, 0]])
    >>> round(cbd_agreement(a, b), 3), cbd_agreement(a == 0, b == 0)
    (0.333, 1.0)
    """
    from fibrecon.evaluate import confusion_counts, iou_from_confusion

    iou = iou_from_confusion(confusion_counts(labels_a, labels_b))["iou_cbd"]  # fibrecon's IoU
    return 1.0 if np.isnan(iou) else iou


def agreement_warning(agreement: float, model, fallback, n_slices: int) -> str | None:
    """The segment stage's warning where ``model`` and ``fallback`` disagree on the CBD of a
    probe (:data:`AGREEMENT_CBD_WARN_BELOW`), or None.

    >>> agreement_warning(0.8, "m.pt", "f.pt", 4) is None
    True
    >>> agreement_warning(0.25, "m.pt", "f.pt", 4)[:60]
    'm.pt and f.pt label the CBD of 4 probe slices with an IoU of'
    """
    if agreement >= AGREEMENT_CBD_WARN_BELOW:
        return None
    return (f"{model} and {fallback} label the CBD of {n_slices} probe slices with an IoU of "
            f"only {agreement:.2f} between them (below {AGREEMENT_CBD_WARN_BELOW}): two networks "
            "trained apart disagree on this stack, so its CBD is in doubt (on benchmark stacks "
            "such disagreement came with a CBD IoU against the truth of 0.51 or less: "
            "benchmarks/RESULTS.md, \"two networks' agreement\"); the CBD fraction, the "
            "electronic tortuosity and the CBD cover of the AM are the metrics it moves most. "
            "Check the QC figure; annotate a few slices and fine-tune (README, \"Correcting "
            "the segmentation: annotations and fine-tuning\")")


#: A segmentation sd widened more than this (:func:`domain_widening`) is a logged warning of the
#: metrics stage (any widening is logged and noted in the metrics JSON and the record): on the
#: 1 + 3 kV model's held-out simulator stacks the widening reached 2.04 once in 12.
WIDENING_WARN_ABOVE = 2.0


def domain_widening(share: float, calibration_share) -> float:
    """How much wider the segmentation sd of a stack is than the calibration's.

    The boundary-shift sd of a model card is fitted on simulator stacks whose
    pooled share of uncertain voxels is ``calibration_share`` (card
    ``calibration: uncertain_share``); ``share`` is a sample's
    (``uncertain_fraction`` of :func:`uncertain_fractions`). A stack that leaves more voxels
    uncertain (finer particles, so more boundary; more noise; or images
    unlike the training data) has larger segmentation errors than the pooled
    fit says, so its shift sd is scaled by ``max(1, share / calibration_share)``:
    1 on stacks as sure as the calibration's, never narrower. It is a
    stack-level scaling of the doubt, not a detector of foreign data: the
    foreign renders of benchmarks/uncertainty.py were widened 1.00-2.14x, its
    simulator test stacks 1.00-2.04x, and a network that is wrong and sure is
    not widened.

    Returns
    -------
    float
        The factor (1 when either share is unknown).

    Examples
    --------
    >>> domain_widening(0.12, 0.04), domain_widening(0.03, 0.04), domain_widening(0.1, None)
    (3.0, 1.0, 1.0)
    """
    if calibration_share is None or not calibration_share > 0 or not share == share:
        return 1.0
    return float(max(1.0, share / float(calibration_share)))


def suggest_slices(table, n: int = 5, spacing: int = 5) -> list[int]:
    """The ``n`` most uncertain slices (highest mean entropy), at least ``spacing`` apart.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``z`` and ``mean_entropy``.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"z": range(6), "mean_entropy": [.1, .5, .45, .2, .3, .05]})
    >>> suggest_slices(t, 2, spacing=2)
    [1, 4]
    """
    chosen = []
    for z in table.sort_values("mean_entropy", ascending=False, kind="stable")["z"]:
        if all(abs(int(z) - c) >= spacing for c in chosen):
            chosen.append(int(z))
        if len(chosen) == n:
            break
    return chosen


def shifted_labels(labels: np.ndarray, prob: np.ndarray, shift) -> np.ndarray:
    """Labels whose boundaries are moved by a shift of the phases' log-probabilities.

    Voxels where argmax(log p + shift) differs from argmax(p) take the new
    phase; every other voxel keeps its label in ``labels`` (which may have
    been cleaned of small islands since).

    Parameters
    ----------
    labels : ndarray of uint8, (z, y, x)
    prob : array-like, (z, classes, y, x)
        Calibrated probabilities, indexed one slice at a time (an array, or a
        :class:`fibrecon.files.VolumeReader`).
    shift : sequence of 3 float
    """
    out = np.array(labels, copy=True)
    b = np.asarray(shift, np.float32).reshape(-1, 1, 1)
    for z in range(len(out)):
        logp = _log(prob[z])
        before, after = logp.argmax(0), (logp + b).argmax(0)
        changed = before != after
        out[z][changed] = after[changed]
    return out


#: How far (in boundary-shift sd, each way) :func:`percolation_doubt` looks for a change of
#: percolation: the +-2 sd of the error bar.
PERCOLATION_BRACKET_SD = 2.0


def _spanning_axes(mask: np.ndarray) -> set[int]:
    """Axes along which a face-connected path of ``mask`` joins the first and last plane."""
    from scipy import ndimage as ndi

    comp, n = ndi.label(mask)
    if n == 0:
        return set()
    out = set()
    for ax in range(mask.ndim):
        first, last = np.unique(np.take(comp, 0, axis=ax)), np.unique(np.take(comp, -1, axis=ax))
        if np.intersect1d(first[first > 0], last[last > 0]).size:
            out.add(ax)
    return out


def percolation_doubt(labels: np.ndarray, prob, sigma, networks: dict, axes: dict,
                      k: float = PERCOLATION_BRACKET_SD) -> set[str]:
    """Tortuosity metrics whose network percolates on one side of the doubt and not the other.

    A transport network near its percolation threshold can gain or lose its
    spanning path within the segmentation's doubt; its tortuosity factor is
    then anything from finite to infinite, and its segmentation sd is
    infinite. The volumes checked are the labels with the boundaries moved by
    +-``k`` sd along each of :data:`SHIFT_DIRECTIONS` (connected-component
    labelling only, no solve).

    Parameters
    ----------
    labels : ndarray of uint8, (z, y, x)
    prob : array-like, (z, classes, y, x)
        Calibrated probabilities.
    sigma : sequence of float
        The card's ``boundary_shift_sd``, one per direction.
    networks : dict
        Network name (``pore``, ``electronic``) -> its phases.
    axes : dict
        Axis name -> axis index, the tortuosity axes.

    Returns
    -------
    set of str
        Names ``tau_<network>_<axis>`` whose percolation differs between the
        segmented volume and any of the bracketing volumes.
    """
    def spans(vol):
        return {name: _spanning_axes(np.isin(vol, phases)) for name, phases in networks.items()}

    base = spans(labels)
    doubt = set()
    for s, d in zip(np.broadcast_to(np.asarray(sigma, float), (len(SHIFT_DIRECTIONS),)),
                    SHIFT_DIRECTIONS):
        for sign in (1.0, -1.0):
            other = spans(shifted_labels(labels, prob, sign * k * s * d))
            for name in networks:
                for ax_name, ax in axes.items():
                    if (ax in base[name]) != (ax in other[name]):
                        doubt.add(f"tau_{name}_{ax_name}")
    return doubt


def phase_fractions(labels) -> np.ndarray:
    """Pore, AM and CBD fractions of a label image or stack.

    >>> phase_fractions(np.array([[0, 1, 1, 2]])).tolist()
    [0.25, 0.5, 0.25]
    """
    labels = np.asarray(labels)
    n = len(PHASES)
    return np.bincount(labels.ravel(), minlength=n)[:n] / max(labels.size, 1)


def fit_fraction_shift(prob, target, *, sweeps: int = 50, max_voxels: int = 2_000_000,
                       seed: int = 0) -> np.ndarray:
    """The log-probability shift b whose labels, argmax(log p + b), have the fractions ``target``.

    Phase k takes a voxel when ``log p_k + b_k`` exceeds every other phase's
    shifted log-probability, so with the other shifts fixed its fraction is
    the share of voxels whose threshold ``max_j(log p_j + b_j) - log p_k``
    lies below ``b_k``: ``b_k`` is that threshold's quantile at the target
    fraction, exact in one pass. The phases are fitted in turn until every
    fraction is within 2e-4 of its target (coordinate descent); sharp
    (confident) probabilities need large shifts, which this reaches as
    readily as small ones. At most ``max_voxels`` voxels, drawn at random, are
    used.

    Parameters
    ----------
    prob : array-like, (z, classes, y, x)
        Calibrated probabilities.
    target : sequence of 3 float
        Pore, AM and CBD fractions to reach.

    Returns
    -------
    ndarray, (3,)
        ``b``, with mean 0 (a shift common to all phases changes nothing).

    Examples
    --------
    >>> p = np.stack([np.full((4, 4), 0.5), np.full((4, 4), 0.3), np.full((4, 4), 0.2)])
    >>> p = p + np.linspace(0, 0.2, 16).reshape(4, 4) * np.array([-1, 1, 0]).reshape(3, 1, 1)
    >>> b = fit_fraction_shift(p[None], [0.5, 0.5, 0.0])
    >>> phase_fractions((np.log(p) + b.reshape(3, 1, 1)).argmax(0)).tolist()
    [0.5, 0.5, 0.0]
    """
    prob = np.asarray(prob)
    n = prob.shape[1]
    logp = np.moveaxis(_log(prob), 1, -1).reshape(-1, n).astype(np.float64)
    if len(logp) > max_voxels:
        logp = logp[np.random.default_rng(seed).choice(len(logp), max_voxels, replace=False)]
    target = np.clip(np.asarray(target, float), 0.0, 1.0)
    b = np.zeros(n)

    def missed(b):
        pred = np.bincount((logp + b).argmax(1), minlength=n)[:n] / len(logp)
        return np.abs(pred - target).max()

    for _ in range(sweeps if missed(b) >= 2e-4 else 0):  # already there: no shift
        for k in range(n):
            others = np.delete(logp + b, k, axis=1).max(axis=1) - logp[:, k]
            # the share of voxels whose threshold lies below b_k becomes target_k
            b[k] = np.clip(np.quantile(others, target[k]), -50.0, 50.0) if 0 < target[k] < 1 \
                else (-50.0 if target[k] <= 0 else 50.0)
        if missed(b) < 2e-4:
            break
    return (b - b.mean()).astype(np.float32)


def fit_boundary_shift(prob: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The log-probability shift that gives one held-out stack its true phase fractions.

    Parameters
    ----------
    prob : ndarray, (z, classes, y, x)
        Calibrated probabilities.
    truth : ndarray of int, (z, y, x)

    Returns
    -------
    ndarray, (2,)
        The shift's coordinates along :data:`SHIFT_DIRECTIONS`; their spread
        over many stacks is the model's ``boundary_shift_sd``.
    """
    b = fit_fraction_shift(prob, phase_fractions(truth))
    return np.array([float(b @ d) for d in SHIFT_DIRECTIONS])


def shifted_volumes(labels: np.ndarray, prob, sigma, *,
                    min_object_voxels: int = VolumeSettings.min_object_voxels):
    """The volumes behind the segmentation sd, one per direction of :data:`SHIFT_DIRECTIONS`.

    Each is :func:`shifted_labels` by ``sigma`` along its direction, cleaned of
    islands as the volume stage cleaned ``labels``
    (:func:`fibrecon.volume.relabel_small_islands`): left in, their
    sub-resolution speckle multiplied the CBD aggregate count (2411 against
    291 cleaned on a demo sample). Logs, per direction, the share of voxels
    the shift moved and how many of them the cleaning put back.

    Yields
    ------
    ndarray of uint8, (z, y, x)
    """
    sigma = np.broadcast_to(np.asarray(sigma, float), (len(SHIFT_DIRECTIONS),))
    for k, (s, d) in enumerate(zip(sigma, SHIFT_DIRECTIONS)):
        yield cleaned_shift(labels, prob, s * d, min_object_voxels=min_object_voxels,
                            name=f"boundary shift {k + 1} ({float(s):.3f} sd)")


def cleaned_shift(labels: np.ndarray, prob, shift, *,
                  min_object_voxels: int = VolumeSettings.min_object_voxels,
                  name: str = "boundary shift") -> np.ndarray:
    """:func:`shifted_labels` by ``shift``, cleaned of islands as the volume stage cleans.

    Logs, under ``name``, the share of voxels the shift moved and how many of
    them the island cleaning (:func:`fibrecon.volume.relabel_small_islands`)
    put back.

    Returns
    -------
    ndarray of uint8, (z, y, x)
    """
    moved = shifted_labels(labels, prob, shift)
    clean = relabel_small_islands(moved, min_object_voxels)
    LOG.info("%s: %.2f %% of the voxels moved, %.2f %% put back by the island cleaning "
             "(islands < %d voxels)", name, 100 * float(np.mean(moved != labels)),
             100 * float(np.mean(clean != moved)), min_object_voxels)
    return clean


def fraction_sd(labels: np.ndarray, prob, sigma, *,
                min_object_voxels: int = VolumeSettings.min_object_voxels) -> np.ndarray:
    """Segmentation sd of the three volume fractions (cheap: no other metric).

    The same delta method as :func:`segmentation_sd`, for the fractions alone,
    on the same volumes (:func:`shifted_volumes`).
    """
    base = phase_fractions(labels)
    moved = [phase_fractions(v) for v in shifted_volumes(labels, prob, sigma,
                                                          min_object_voxels=min_object_voxels)]
    return np.sqrt(sum((m - base) ** 2 for m in moved))


def fit_shift_sd(cases, *, iterations: int = 3,
                 min_object_voxels: int = VolumeSettings.min_object_voxels) -> np.ndarray:
    """The boundary-shift sd that makes the fraction errors of held-out stacks one sd on average.

    Starts from the RMS of the shifts that give each stack its true fractions
    (:func:`fit_boundary_shift`), then scales it until the volume-fraction
    errors divided by their segmentation sd (:func:`fraction_sd`) have an RMS
    of 1 over the stacks and phases: the shift alone misses errors that are
    not a boundary bias (confidently wrong regions), which the scaling takes
    into the error bar.

    Parameters
    ----------
    cases : sequence of (labels (z, y, x), prob (z, classes, y, x), truth (z, y, x))
        Held-out stacks: the (cleaned) segmentation, its calibrated
        probabilities and the true labels.
    min_object_voxels : int
        The island cleaning of the shifted volumes (:func:`fraction_sd`).

    Returns
    -------
    ndarray, (2,)
        sd along :data:`SHIFT_DIRECTIONS` (the model card's ``boundary_shift_sd``),
        signed: the side of each direction on which the stacks' shifts lie on
        average. The metrics are recomputed with the boundaries moved to that
        side, where the truth lay more often; for a linear metric the side does
        not matter, for percolation it does (a network that under-segments the
        CBD is moved toward more CBD, where a cut network may connect).
    """
    shifts = np.array([fit_boundary_shift(p, t) for _, p, t in cases])
    sigma = np.sqrt((shifts ** 2).mean(axis=0)) * np.where(shifts.mean(axis=0) < 0, -1.0, 1.0)
    errors = [phase_fractions(lab) - phase_fractions(t) for lab, _, t in cases]
    for _ in range(iterations):
        sds = [fraction_sd(lab, p, sigma, min_object_voxels=min_object_voxels)
               for lab, p, _ in cases]
        z = np.concatenate([e / np.maximum(sd, 1e-6) for e, sd in zip(errors, sds)])
        scale = float(np.sqrt((z ** 2).mean()))
        sigma = sigma * scale
        if abs(scale - 1) < 0.05:
            break
    return sigma


#: Metric families with a widening factor of their own in the calibration
#: (prefix of the metric name -> family): the error of a network's tortuosity
#: is more than a boundary shift explains (thin necks cut or joined).
METRIC_FAMILIES = {"volume_fraction_": "volume_fraction", "d50_um": "d50",
                   "tau_pore_": "pore_transport", "relative_pore_": "pore_transport",
                   "macmullin_pore_": "pore_transport",
                   "tau_electronic_": "electronic_transport",
                   "relative_electronic_": "electronic_transport",
                   "macmullin_electronic_": "electronic_transport"}


def metric_family(key: str) -> str | None:
    """The calibration family of a metric (:data:`METRIC_FAMILIES`), or None.

    Examples
    --------
    >>> metric_family("tau_electronic_y"), metric_family("cbd_aggregates")
    ('electronic_transport', None)
    """
    return next((f for prefix, f in METRIC_FAMILIES.items() if key.startswith(prefix)), None)


def segmentation_sd(baseline: dict, shifted: list[dict], scale: dict | None = None) -> dict:
    """Each scalar metric's segmentation sd from the metrics of the shifted volumes.

    Parameters
    ----------
    baseline : dict
        Metrics of the segmented volume.
    shifted : list of dict
        Metrics of the volumes moved by ``sigma`` along each of
        :data:`SHIFT_DIRECTIONS`.
    scale : dict, optional
        Family (:func:`metric_family`) -> widening factor (the model card's
        ``calibration: family_scale``); other metrics are not widened.

    Returns
    -------
    dict
        ``<metric>_sd_segmentation`` for every scalar of ``baseline`` that is
        not NaN: inf when a shifted volume loses or gains percolation (the
        metric is not determined by the segmentation), 0 for a metric that
        stays infinite (a network that percolates in none of them).

    Examples
    --------
    >>> segmentation_sd({"a": 1.0, "t": float("inf")}, [{"a": 1.3, "t": float("inf")},
    ...                                                 {"a": 0.6, "t": float("inf")}])
    {'a_sd_segmentation': 0.5, 't_sd_segmentation': 0.0}
    """
    out = {}
    for key, m0 in baseline.items():
        if isinstance(m0, bool) or not isinstance(m0, (int, float)) or np.isnan(m0):
            continue
        values = [s.get(key, float("nan")) for s in shifted]
        if not np.isfinite(m0) or any(not np.isfinite(v) for v in values):
            out[f"{key}_sd_segmentation"] = 0.0 if all(v == m0 for v in values) else float("inf")
            continue
        factor = (scale or {}).get(metric_family(key), 1.0)
        out[f"{key}_sd_segmentation"] = factor * float(np.sqrt(sum((v - m0) ** 2
                                                                   for v in values)))
    return out


def error_scale(cases, *, share: float = 0.9, k: float = 2.0) -> float:
    """The factor that widens the sd until ``share`` of the errors lie within ``k`` sd.

    Split-conformal calibration of the normalised errors |measured - true| / sd
    of held-out cases (their finite-sample quantile, ceil((n + 1) share) / n):
    on cases like them, at least ``share`` of the widened intervals cover the
    truth. The calibration's last step: the boundary-shift sd is multiplied by
    it, so that all the metrics the error bars are for, not only the volume
    fractions, are covered.

    Parameters
    ----------
    cases : iterable of (measured, sd, true)
        Triples with all three finite and sd > 0 are used.
    share : float
    k : float

    Examples
    --------
    >>> cases = [(1.0, 0.1, 1.0 + 0.1 * z) for z in (0.5, 1, 1.5, 3, 6)]
    >>> round(error_scale(cases, share=0.6), 6)
    1.5
    """
    z = np.sort([abs(m - t) / sd for m, sd, t in cases
                 if np.isfinite(m) and np.isfinite(t) and np.isfinite(sd) and sd > 0])
    if not z.size:
        return 1.0
    rank = min(int(np.ceil((z.size + 1) * share)), z.size) - 1
    return float(z[rank] / k)


def covered(measured: float, sd: float, true: float, k: float = 2.0) -> bool:
    """Whether ``true`` lies within ``measured +- k sd``.

    Infinite values (no percolating path) count as covered when both are
    infinite, or when the sd is infinite (the boundaries' doubt decides
    percolation); one infinite and the other finite with a finite sd is a miss.

    Examples
    --------
    >>> covered(0.30, 0.01, 0.315), covered(0.30, 0.01, 0.33)
    (True, False)
    >>> covered(float("inf"), float("inf"), 3.0)
    True
    """
    if not np.isfinite(measured) or not np.isfinite(true):
        return bool((not np.isfinite(measured) and not np.isfinite(true)) or sd == np.inf)
    return bool(abs(measured - true) <= k * sd)


def coverage(cases, k: float = 2.0) -> tuple[int, int]:
    """(covered, counted) over (measured, sd, true) triples; NaN triples are not counted."""
    hits = n = 0
    for m, sd, t in cases:
        if np.isnan(m) or np.isnan(t) or np.isnan(sd):
            continue
        n += 1
        hits += covered(m, sd, t, k)
    return hits, n
