"""Microstructure metrics of a 3D phase volume, collected per sample.

Volume fractions and profiles (here); particle sizes and dispersion
(:mod:`fibrecon.particles`); tortuosity of the ionic and electronic networks
(:mod:`fibrecon.tortuosity`); CBD connectivity, aggregates, coverage and
thickness (:mod:`fibrecon.cbd`); interface areas (:mod:`fibrecon.interfaces`).
"""

from __future__ import annotations

import contextlib
import logging
import time

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fibrecon import AM, CBD, MIN_EDGE_VOXELS, PHASES, PORE, phase_counts
from fibrecon.cbd import (aggregate_table, am_surface_coverage, percolating_fraction,
                          thickness_summary)
from fibrecon.interfaces import interface_areas
from fibrecon.particles import (CLOSE_UM, H_UM, SIGMA_UM,
                                correlation_length, local_fraction_cv,
                                nearest_neighbour_distances, particle_table, particles_in_box,
                                separate_particles, size_summary, split_lengths,
                                two_point_correlation)
from fibrecon.rve import subvolume_spread
from fibrecon.settings import StageSettings
from fibrecon.tortuosity import SPREAD_TOL, tortuosity_factor
from fibrecon.uncertainty import (SHIFT_DIRECTIONS, WIDENING_WARN_ABOVE, cleaned_shift,
                                  domain_widening, fit_fraction_shift, phase_fractions,
                                  percolation_doubt, segmentation_sd, shifted_volumes)
from fibrecon.volume import VolumeSettings, fraction_warnings

__all__ = ["AXES", "volume_fractions", "fraction_metrics", "fraction_profile", "transport",
           "particle_metrics", "particle_statistics", "dispersion_metrics", "cbd_metrics",
           "thickness_metrics", "rve_metrics", "sample_metrics", "volume_metrics", "SERIES_KEYS",
           "series_metrics", "summary_metrics", "MetricsSettings", "metrics_of", "other_network",
           "other_network_shift", "segmentation_uncertainty"]

#: Axis names in (z, y, x) order.
AXES = {"z": 0, "y": 1, "x": 2}

@dataclass(frozen=True, kw_only=True)
class MetricsSettings(StageSettings):
    """Settings of the metrics stage (``metrics:`` in the config).

    Attributes
    ----------
    tortuosity_axes : tuple of str
        Directions of the tortuosity factors.
    electronic_network : {"cbd", "cbd+am"}
        The phases that conduct electrons.
    device : str
        ``"cpu"`` or ``"cuda"`` (taufactor).
    conv_crit : float
        Convergence criterion of the tortuosity solver.
    particle_h_um, particle_sigma_um : float
        Watershed marker height and distance-map smoothing of the particle split,
        micrometres (:func:`fibrecon.particles.separate_particles`).
    particle_close_um : float
        Crack closing of the particle split (micrometres, 0: none; voids
        enclosed by a particle are filled either way). Closing bridges the
        necks of pressed or small particles as well: set it only for particles
        cracked through (:func:`fibrecon.particles.separate_particles`).
    particle_h_doubt_um : float
        How far the segmentation may move a saddle of the distance map against
        its peaks (micrometres): the segmentation sd of the particle metrics also
        holds their change when the particles are separated with
        ``particle_h_um -+ particle_h_doubt_um`` (:func:`segmentation_uncertainty`);
        0 leaves it out. Below ``particle_h_um``.
    dispersion_block_um : float
        Block size of the local AM-fraction variation.

    Raises
    ------
    fibrecon.samples.ConfigError
        ``particle_h_doubt_um`` negative or not below ``particle_h_um``.
    """

    SECTION = "metrics"
    tortuosity_axes: tuple = ("z", "y", "x")
    electronic_network: str = "cbd"
    device: str = "cpu"
    conv_crit: float = 0.01
    particle_h_um: float = H_UM
    particle_sigma_um: float = SIGMA_UM
    particle_close_um: float = CLOSE_UM
    particle_h_doubt_um: float = 0.025
    dispersion_block_um: float = 2.0

    def __post_init__(self):
        from fibrecon.samples import check_particle_h_doubt

        check_particle_h_doubt(self.particle_h_um, self.particle_h_doubt_um)


#: The start of the note (and warning) for a volume without any whole particle.
NO_WHOLE_PARTICLE = "no AM particle lies wholly inside the volume"

#: Keys of :func:`sample_metrics`' record plotted across a series (one figure each).
SERIES_KEYS = ("volume_fraction_pore", "volume_fraction_am", "volume_fraction_cbd", "d50_um",
               "am_local_fraction_cv", "cbd_percolating_fraction", "cbd_aggregate_d50_um",
               "am_surface_cbd_fraction", "specific_area_am_pore_per_um")


def summary_metrics(tortuosity_axes=("z", "y", "x")) -> list[str]:
    """The key metrics of the series summary figure: porosity, pore tortuosity through-plane
    (y, the electrode's thickness direction, else the first axis), d50, CBD coverage of the AM
    and the percolating share of the CBD."""
    axis = "y" if "y" in tortuosity_axes else tortuosity_axes[0]
    return ["volume_fraction_pore", f"tau_pore_{axis}", "d50_um", "am_surface_cbd_fraction",
            "cbd_percolating_fraction"]


def series_metrics(tortuosity_axes=("z", "y", "x")) -> list[str]:
    """The metrics of the series table's figures: :data:`SERIES_KEYS` and both networks' tau.

    Examples
    --------
    >>> series_metrics(["z"])[-2:]
    ['tau_pore_z', 'tau_electronic_z']
    """
    return [*SERIES_KEYS, *(f"tau_pore_{ax}" for ax in tortuosity_axes),
            *(f"tau_electronic_{ax}" for ax in tortuosity_axes)]


def volume_fractions(labels: np.ndarray) -> dict:
    """Volume fraction of each phase.

    Parameters
    ----------
    labels : ndarray of int
        Phase labels 0 pore, 1 AM, 2 CBD.

    Returns
    -------
    dict
        ``{"pore": f0, "am": f1, "cbd": f2}``, summing to 1.

    Examples
    --------
    >>> volume_fractions(np.array([0, 0, 1, 2]))
    {'pore': 0.5, 'am': 0.25, 'cbd': 0.25}
    """
    labels = np.asarray(labels)
    counts = phase_counts(labels)
    return {name: float(counts[p] / labels.size) for p, name in PHASES.items()}


def fraction_metrics(labels: np.ndarray) -> dict:
    """:func:`volume_fractions` under the record's names, ``volume_fraction_<phase>``."""
    return {f"volume_fraction_{name}": f for name, f in volume_fractions(labels).items()}


def fraction_profile(labels: np.ndarray, phase: int, axis: int) -> np.ndarray:
    """Fraction of ``phase`` in each plane perpendicular to ``axis``."""
    other = tuple(a for a in range(labels.ndim) if a != axis)
    return (labels == phase).mean(axis=other)


def transport(labels: np.ndarray, phases, voxel_size, axes, *, name: str = "network",
              device: str = "cpu", conv_crit: float = 1e-2, tol: float = 1e-4) -> dict:
    """Tortuosity factor, relative effective transport and MacMullin number of a network.

    Parameters
    ----------
    labels : ndarray, (z, y, x)
    phases : sequence of int
        Phases that conduct (e.g. ``[0]`` ionic through the pores, ``[2]``
        electronic through the CBD, ``[1, 2]`` through CBD and AM).
    voxel_size : tuple of float
    axes : sequence of str
        Directions, from ``"z"``, ``"y"``, ``"x"``.
    name : str
        Network name used in the keys (``"pore"``, ``"electronic"``).
    device, conv_crit, tol
        Of :func:`fibrecon.tortuosity.tortuosity_factor`.

    Returns
    -------
    dict
        Per axis: ``tau_<name>_<axis>``, ``relative_<name>_<axis>`` (D_eff/D =
        eps/tau, the relative effective diffusivity or conductivity),
        ``macmullin_<name>_<axis>`` (N_M = tau/eps = 1/relative; inf when not
        percolating).
    """
    mask = np.isin(labels, list(phases))
    out = {}
    for ax in axes:
        r = tortuosity_factor(mask, AXES[ax], voxel_size, device=device, conv_crit=conv_crit,
                              tol=tol)
        out[f"tau_{name}_{ax}"] = r["tau"]
        out[f"relative_{name}_{ax}"] = r["D_rel"]
        out[f"macmullin_{name}_{ax}"] = 1.0 / r["D_rel"] if r["D_rel"] > 0 else float("inf")
    return out


def particle_metrics(labels: np.ndarray, voxel_size, *, h=MetricsSettings.particle_h_um,
                     sigma: float = MetricsSettings.particle_sigma_um,
                     close_um: float = MetricsSettings.particle_close_um):
    """Separate the AM into particles and measure them (:func:`particle_statistics`).

    ``h`` may be a sequence of marker heights: one separation each, sharing
    the distance map and the markers' flooding
    (:func:`fibrecon.particles.separate_particles`).

    Returns
    -------
    metrics : dict
    particles : pandas.DataFrame
        One row per particle (:func:`fibrecon.particles.particle_table`).
        A list of these (metrics, particles) pairs for a sequence ``h``.
    """
    volume = labels.size * float(np.prod(voxel_size))
    splits = separate_particles(labels == AM, voxel_size, h=h, sigma=sigma, close_um=close_um)
    out = []
    for split in (splits if np.ndim(h) else [splits]):
        particles = particle_table(split, voxel_size)
        out.append((particle_statistics(particles, volume), particles))
    return out if np.ndim(h) else out[0]


def particle_statistics(particles: pd.DataFrame, volume_um3: float) -> dict:
    """Sizes, shape, number density and nearest-neighbour distances of measured particles.

    Returns
    -------
    dict
        :func:`fibrecon.particles.size_summary` and
        ``nearest_neighbour_distance_{mean_um,cv}``.
    """
    out = size_summary(particles, volume_um3)
    nn = nearest_neighbour_distances(particles)
    out["nearest_neighbour_distance_mean_um"] = float(nn.mean()) if nn.size else float("nan")
    out["nearest_neighbour_distance_cv"] = float(nn.std() / nn.mean()) if nn.size else float("nan")
    return out


def dispersion_metrics(labels: np.ndarray, voxel_size, *, block_um: float = 2.0) -> dict:
    """How evenly the AM is spread: local-fraction CV over blocks, correlation length."""
    am = labels == AM
    block = max(2, int(round(block_um / min(voxel_size))))
    return {"am_local_fraction_cv": local_fraction_cv(am, block),
            "am_correlation_length_um": correlation_length(
                two_point_correlation(am, voxel_size), float(am.mean()))}


def cbd_metrics(labels: np.ndarray, voxel_size) -> tuple[dict, pd.DataFrame]:
    """CBD percolation, aggregates and coverage of the AM surface.

    Returns
    -------
    metrics : dict
        ``cbd_percolating_fraction``, ``cbd_aggregates``, ``cbd_aggregate_d50_um``,
        ``am_surface_{cbd,pore}_fraction``.
    aggregates : pandas.DataFrame
        One row per CBD cluster (:func:`fibrecon.cbd.aggregate_table`).
    """
    cbd = labels == CBD
    aggregates = aggregate_table(cbd, voxel_size)
    out = {"cbd_percolating_fraction": percolating_fraction(cbd),
           "cbd_aggregates": int(len(aggregates)),
           "cbd_aggregate_d50_um": float(aggregates["diameter_um"].median())
           if len(aggregates) else float("nan")}
    out.update(am_surface_coverage(labels))
    return out, aggregates


def thickness_metrics(labels: np.ndarray, voxel_size) -> dict:
    """Mean and median local thickness of the CBD and the pores (pore size)."""
    out = {}
    for name, phase in (("cbd", CBD), ("pore", PORE)):
        out[f"{name}_thickness_mean_um"], out[f"{name}_thickness_d50_um"] = \
            thickness_summary(labels == phase, min(voxel_size))
    return out


def rve_metrics(particles: pd.DataFrame, *, electronic_phases=(CBD,),
                tortuosity_axes=("z", "y", "x"), dispersion_block_um: float = 2.0) -> dict:
    """The metric groups whose spread over sub-volumes is measured, with the sample's settings.

    Every scalar metric of :func:`sample_metrics` is in one group, except the
    counts that grow with the volume (particles, aggregates) and the volume
    itself.

    Parameters
    ----------
    particles : pandas.DataFrame
        The whole volume's particles (:func:`fibrecon.particles.particle_table`):
        a sub-volume's particle statistics are those of the particles it holds
        (:func:`fibrecon.particles.particles_in_box`), not of a separation
        redone on it.
    electronic_phases, tortuosity_axes, dispersion_block_um
        As :func:`sample_metrics`.

    Returns
    -------
    dict
        Group name -> (function of (labels, voxel_size, box) returning
        {metric: value}, largest edge fraction below the whole volume it is
        computed at, most sub-volumes per size or None for all), as
        :func:`fibrecon.rve.subvolume_spread` takes it. The costly groups
        (transport, thickness, surfaces) stop at half the edge, their error
        bar, on 4 sub-volumes per size; the spread then takes about a quarter
        of the time of the whole metric set (``benchmarks/RESULTS.md``).
    """
    def without_counts(result):
        return {k: v for k, v in result.items()
                if k not in ("particles_whole", "particles_cut", "cbd_aggregates")}

    def network(phases, name):
        return lambda sub, vs, box: transport(sub, phases, vs, tortuosity_axes, name=name,
                                              tol=SPREAD_TOL)

    def held(sub, vs, box):
        return without_counts(particle_statistics(particles_in_box(particles, box),
                                                  sub.size * float(np.prod(vs))))

    return {
        "volume fractions": (lambda sub, vs, box: fraction_metrics(sub), 0.75, None),
        "dispersion": (lambda sub, vs, box: dispersion_metrics(sub, vs,
                                                               block_um=dispersion_block_um),
                       0.75, None),
        "CBD": (lambda sub, vs, box: without_counts(cbd_metrics(sub, vs)[0]), 0.75, None),
        "particles": (held, 0.75, None),
        "pore transport": (network((PORE,), "pore"), 0.5, 4),
        "electronic transport": (network(tuple(electronic_phases), "electronic"), 0.5, 4),
        "thickness": (lambda sub, vs, box: thickness_metrics(sub, vs), 0.5, 4),
        "interface areas": (lambda sub, vs, box: interface_areas(sub, vs), 0.5, 4),
    }


LOG = logging.getLogger(__name__)  # a child of the rule log's "fibrecon" logger


@contextlib.contextmanager
def _stage(name: str):
    """Log a metric stage's wall time and the process's peak memory so far."""
    start = time.perf_counter()
    yield
    try:
        import resource  # not on Windows
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except ImportError:
        peak_mb = float("nan")
    LOG.info("metrics stage %-26s %7.1f s, peak RSS so far %.0f MB", name,
             time.perf_counter() - start, peak_mb)


def check_edges(shape, source: str = "label volume") -> None:
    """Refuse a volume the metrics cannot take: not 3D, or an axis below :data:`MIN_EDGE_VOXELS`.

    Raises
    ------
    ValueError
        Naming ``source`` and the shape.
    """
    if len(shape) != 3 or min(shape) < MIN_EDGE_VOXELS:
        raise ValueError(
            f"{source}: a volume of {tuple(shape)} (z, y, x) voxels (shape {tuple(shape)} is "
            f"smaller than the analysis needs: every axis needs at least {MIN_EDGE_VOXELS} voxels, "
            "sub-volumes of a quarter of the edge for the representative-volume spread and a "
            "path for the tortuosity solve)")


def sample_metrics(labels: np.ndarray, voxel_size, *, tortuosity_axes=("z", "y", "x"),
                   electronic_phases=(CBD,), device: str = "cpu", conv_crit: float = 1e-2,
                   particle_h_um: float = MetricsSettings.particle_h_um,
                   particle_sigma_um: float = MetricsSettings.particle_sigma_um,
                   particle_close_um: float = MetricsSettings.particle_close_um,
                   dispersion_block_um: float = 2.0, probabilities=None,
                   boundary_shift_sd=None, family_scale=None,
                   min_object_voxels: int = VolumeSettings.min_object_voxels,
                   particle_h_doubt_um: float = MetricsSettings.particle_h_doubt_um,
                   uncertain_share=None, calibration_uncertain_share=None, other_network=None):
    """Every metric of one sample, with units in the names, and two error bars.

    Parameters
    ----------
    labels : ndarray of uint8, (z, y, x)
        Phase volume (0 pore, 1 AM, 2 CBD).
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    tortuosity_axes : sequence of str
        Directions of the tortuosity factors.
    electronic_phases : sequence of int
        The electronic network: ``(2,)`` CBD alone, ``(1, 2)`` CBD and AM.
    device, conv_crit
        For :func:`fibrecon.tortuosity.tortuosity_factor`.
    particle_h_um, particle_sigma_um
        Particle separation (:func:`fibrecon.particles.separate_particles`).
    dispersion_block_um : float
        Block size of the local-AM-fraction coefficient of variation.
    probabilities : array-like, (z, classes, y, x), optional
        Calibrated class probabilities of the segmentation. With
        ``boundary_shift_sd`` every scalar metric gets ``<name>_sd_segmentation``
        (:mod:`fibrecon.uncertainty`: the metrics of two volumes whose
        boundaries are moved by the calibrated shift; infinite for a tortuosity
        factor whose network gains or loses its spanning path within +-2 sd of
        the shift, :func:`fibrecon.uncertainty.percolation_doubt`); NaN without.
    boundary_shift_sd : float or sequence of 2 float, optional
        The model card's ``calibration: boundary_shift_sd`` (one per
        direction of :data:`fibrecon.uncertainty.SHIFT_DIRECTIONS`).
    family_scale : dict, optional
        The card's ``calibration: family_scale`` (widening per metric family).
    min_object_voxels : int
        The volume stage's island cleaning (``volume: min_object_voxels``),
        applied to the boundary-shifted volumes as it was to ``labels``
        (:func:`fibrecon.uncertainty.shifted_volumes`).
    particle_h_doubt_um : float
        The particle separation's doubt in the segmentation sd
        (:func:`segmentation_uncertainty`, ``metrics: particle_h_doubt_um``).
    uncertain_share, calibration_uncertain_share : float, optional
        The sample's share of uncertain voxels (the segment stage's table,
        :func:`fibrecon.uncertainty.uncertain_fractions`) and the card's
        ``calibration: uncertain_share``: where the sample leaves more voxels
        uncertain than the calibration stacks did, the boundary shift is
        widened by the ratio (:func:`fibrecon.uncertainty.domain_widening`;
        ``segmentation_doubt`` in the result and a note; a warning above
        :data:`fibrecon.uncertainty.WIDENING_WARN_ABOVE`). Either missing: no
        widening.
    other_network : dict, optional
        A second network's reading of some slices (the segment stage's probe:
        ``name``, ``slices``, its phase ``fractions`` on them). The labels'
        boundaries are moved until those slices have that network's fractions
        (:func:`other_network_shift`) and the metrics of the moved volume are
        one more term of every segmentation sd: where two networks trained
        apart read a stack differently, the error bar spans both readings
        (``segmentation_doubt: other_network`` in the result, and a note).

    Returns
    -------
    metrics : dict
        Scalars and profiles (lists), JSON-ready; ``<name>_sd_half_edge``
        (sampling: sub-volumes of half the edge) and ``<name>_sd_segmentation``.
    particles : pandas.DataFrame
        One row per particle (:func:`fibrecon.particles.particle_table`).
    aggregates : pandas.DataFrame
        One row per CBD cluster (:func:`fibrecon.cbd.aggregate_table`).
    spread : pandas.DataFrame
        Representative-volume table (:func:`fibrecon.rve.subvolume_spread`);
        its spread at half the edge is each metric's ``<name>_sd_half_edge``.
    """
    vs = tuple(float(v) for v in voxel_size)
    if len(vs) != 3 or min(vs) <= 0 or not all(np.isfinite(vs)):
        raise ValueError(f"voxel size must be three positive numbers (dz, dy, dx), got {voxel_size}")
    check_edges(labels.shape)
    phase_counts(labels, "label volume")
    out = {"shape": list(labels.shape), "voxel_size_um": list(vs)}
    lengths, first_notes = split_lengths(vs, particle_h_um, particle_sigma_um,
                                         particle_h_doubt_um), []
    scale = lengths["scale"]
    if scale > 1:  # no heights below a voxel: the marker heights and smoothing enlarged alike
        first_notes.append(
            f"the voxel ({min(vs):g} um) is coarser than metrics: particle_h_um = "
            f"{particle_h_um:g} um, and a distance map has no heights finer than a voxel: the "
            f"particle split uses its lengths x{scale:.3g} (h {particle_h_um * scale:g}, "
            f"sigma {particle_sigma_um * scale:g}, doubt {particle_h_doubt_um * scale:g} um); "
            "set as they are, they would break particles up")
        LOG.warning(first_notes[-1])
    particle_h_um, particle_sigma_um = lengths["h"], lengths["sigma"]
    particle_h_doubt_um = lengths["doubt"]
    out["particle_split_um"] = {"h": particle_h_um, "sigma": particle_sigma_um,
                                "closing": particle_close_um, "doubt": particle_h_doubt_um}
    for ax, a in AXES.items():
        out[f"porosity_profile_{ax}"] = fraction_profile(labels, PORE, a).tolist()
    kwargs = dict(tortuosity_axes=tortuosity_axes, electronic_phases=electronic_phases,
                  device=device, conv_crit=conv_crit, particle_h_um=particle_h_um,
                  particle_sigma_um=particle_sigma_um, particle_close_um=particle_close_um,
                  dispersion_block_um=dispersion_block_um)
    with_sd = probabilities is not None and boundary_shift_sd is not None
    doubt_h = (particle_h_um - particle_h_doubt_um, particle_h_um + particle_h_doubt_um) \
        if with_sd and particle_h_doubt_um > 0 else ()
    scalars, particles, aggregates, separated = volume_metrics(labels, vs, also_h=doubt_h,
                                                               **kwargs)
    out.update(scalars)
    # last: what its many small solves leave resident (compiled code, allocator arenas)
    # then stays below the peak of the whole-volume stages
    with _stage("representative volume"):
        spread = subvolume_spread(labels, vs, rve_metrics(
            particles, electronic_phases=electronic_phases, tortuosity_axes=tortuosity_axes,
            dispersion_block_um=dispersion_block_um), whole=out)
    half = spread[spread["edge_fraction"] == 0.5]
    for _, row in half.iterrows():  # error bar: spread over sub-volumes of half the edge
        out[f"{row['metric']}_sd_half_edge"] = row["sd"]
    if with_sd:
        sigma = np.broadcast_to(np.asarray(boundary_shift_sd, float), (len(SHIFT_DIRECTIONS),))
        share = float("nan") if uncertain_share is None else float(uncertain_share)
        widen = domain_widening(share, calibration_uncertain_share)
        sigma = sigma * widen
        out["segmentation_doubt"] = {"uncertain_share": round(share, 4),
                                     "calibration_uncertain_share": calibration_uncertain_share,
                                     "widening": round(widen, 3)}
        if widen > 1:
            first_notes.append(
                f"{100 * share:.1f} % of the voxels are uncertain against "
                f"{100 * calibration_uncertain_share:.1f} % on the model's calibration stacks: "
                f"the segmentation sd is widened x{widen:.2f} (fine particles, noise or images "
                "unlike the training data make a less sure network)"
                + ("; check the QC figure and correct a few slices (results/annotate/<sample>/)"
                   if widen > WIDENING_WARN_ABOVE else ""))
            (LOG.warning if widen > WIDENING_WARN_ABOVE else LOG.info)(first_notes[-1])
        other_shift = None
        if other_network:
            other_shift, reading = other_network_shift(probabilities, other_network)
            first_notes.append(reading.pop("note"))
            out["segmentation_doubt"]["other_network"] = reading
            (LOG.info if other_shift is not None else LOG.warning)(first_notes[-1])
        with _stage("segmentation uncertainty"):
            sds, doubt = segmentation_uncertainty(labels, probabilities, sigma, vs, scalars,
                                                  family_scale,
                                                  min_object_voxels=min_object_voxels,
                                                  h_doubt=particle_h_doubt_um,
                                                  separated=separated or None,
                                                  other_shift=other_shift, **kwargs)
        out.update(sds)
        out["boundary_shift_sd"] = sigma.tolist()
        out["percolation_in_doubt"] = doubt
        if doubt:
            LOG.warning("%d tortuosity factor(s) %s: the network gains or loses its spanning path "
                        "within +-2 sd of the segmentation's boundary doubt, their "
                        "sd_segmentation is inf (values %s)", len(doubt), doubt,
                        {k: round(float(scalars[k]), 3) for k in doubt})
    else:
        out.update({f"{k}_sd_segmentation": float("nan") for k, v in scalars.items()
                    if isinstance(v, (int, float))})
    out["electronic_network_phases"] = [PHASES[p] for p in electronic_phases]
    out["notes"] = first_notes + _notes(out) + fraction_warnings(labels)  # record and report show them
    for note in out["notes"]:
        if note.startswith(NO_WHOLE_PARTICLE):
            LOG.warning(note)
    if probabilities is None or boundary_shift_sd is None:
        out["notes"].append("no class probabilities (or no calibrated boundary shift in the "
                            "model card): the segmentation sd of the metrics is NaN")
    return out, particles, aggregates, spread


def other_network(probe: dict | None) -> dict | None:
    """The second network's reading in the segment stage's probe (``_model.json``), or None.

    The fallback's where the model segmented, the model's where the fallback
    did; None without a probe or without fractions (a probe written before
    they were stored, or ``segment.fallback_model: none``).

    Examples
    --------
    >>> probe = {"slices": [0, 8], "switched": False, "model": "m/a.pt", "fallback": "m/b.pt",
    ...          "fractions_model": [.4, .5, .1], "fractions_fallback": [.4, .4, .2]}
    >>> other_network(probe)
    {'name': 'b.pt', 'slices': [0, 8], 'fractions': [0.4, 0.4, 0.2]}
    >>> other_network({**probe, "switched": True})["name"], other_network(None)
    ('a.pt', None)
    """
    if not probe or not probe.get("fractions_model") or not probe.get("fractions_fallback"):
        return None
    theirs = "model" if probe.get("switched") else "fallback"
    return {"name": str(probe[theirs]).replace("\\", "/").rsplit("/", 1)[-1],
            "slices": list(probe["slices"]), "fractions": list(probe[f"fractions_{theirs}"])}


def other_network_shift(probabilities, other: dict):
    """The boundary shift that gives the segmentation a second network's phase fractions.

    The segment stage's probe has a second network (the fallback, or the
    model where the fallback segmented) label a few slices. Their phase
    fractions, against this network's on the same slices, are a reading of
    the segmentation's doubt that a calibration on simulator stacks cannot
    give: on stacks unlike the training data the two networks disagree where
    the segmentation is wrong (``benchmarks/uncertainty.py``). The shift is
    fitted on those slices' calibrated probabilities
    (:func:`fibrecon.uncertainty.fit_fraction_shift`) and applied to the
    whole volume by :func:`segmentation_uncertainty`.

    Parameters
    ----------
    probabilities : array-like, (z, classes, y, x)
        Calibrated probabilities of the network that segmented the volume.
    other : dict
        ``name``, ``slices`` (indices into ``probabilities``) and ``fractions``
        (pore, AM, CBD of the other network on those slices).

    Returns
    -------
    shift : ndarray (3,) or None
        None where the slices do not fit the volume (the reading is then
        not used; ``note`` says why).
    reading : dict
        JSON-ready: both networks' fractions on the slices, the shift, a note.

    Examples
    --------
    >>> p = np.zeros((2, 3, 4, 4)); p[:, 0] = 0.6; p[:, 1] = 0.4
    >>> p[:, 1, :, :2] = 0.7; p[:, 0, :, :2] = 0.3
    >>> shift, r = other_network_shift(p, {"name": "f.pt", "slices": [0, 1],
    ...                                    "fractions": [0.25, 0.75, 0.0]})
    >>> r["fractions_used"], r["fractions_other"]
    ([0.5, 0.5, 0.0], [0.25, 0.75, 0.0])
    """
    name, zs = str(other.get("name", "the other network")), [int(z) for z in other["slices"]]
    target = [float(v) for v in other["fractions"]]
    n = len(probabilities)
    if not zs or min(zs) < 0 or max(zs) >= n:
        return None, {"name": name, "note": (
            f"the probe's slices {zs} of {name} do not lie in this volume of {n} slices: its "
            "reading is left out of the segmentation sd")}
    probe = np.stack([np.asarray(probabilities[z], np.float32) for z in zs])
    used = phase_fractions(probe.argmax(1))
    shift = fit_fraction_shift(probe, target)
    reading = {"name": name, "slices": zs, "fractions_used": [round(float(v), 4) for v in used],
               "fractions_other": [round(v, 4) for v in target],
               "shift": [round(float(v), 4) for v in shift]}
    reading["note"] = (
        f"{name} reads {len(zs)} probe slices as pore / AM / CBD "
        + " / ".join(f"{v:.3f}" for v in target) + " against "
        + " / ".join(f"{v:.3f}" for v in used) + " of this segmentation: every segmentation sd "
        "includes the metrics of the volume with its boundaries moved to that reading")
    return shift, reading


def segmentation_uncertainty(labels, probabilities, sigma, vs, baseline: dict,
                             family_scale=None, *,
                             min_object_voxels: int = VolumeSettings.min_object_voxels,
                             h_doubt: float = MetricsSettings.particle_h_doubt_um,
                             separated=None, other_shift=None, **kwargs) -> tuple[dict, list]:
    """Every scalar metric's segmentation sd, and the tortuosities whose percolation is in doubt.

    The metrics of the volumes whose boundaries are moved by ``sigma`` along
    each of :data:`fibrecon.uncertainty.SHIFT_DIRECTIONS` and cleaned of
    islands as the volume stage cleaned ``labels``
    (:func:`fibrecon.uncertainty.shifted_volumes`,
    :func:`fibrecon.uncertainty.segmentation_sd`), with an infinite sd for a
    tortuosity factor whose network gains or loses its spanning path within
    +-2 sd (:func:`fibrecon.uncertainty.percolation_doubt`).

    The particle metrics get a second source of doubt, added in quadrature:
    their change when ``labels`` is separated into particles with the marker
    height ``particle_h_um -+ h_doubt``. A boundary shift moves the peaks and the
    saddles of the distance map together, so it hardly merges or splits
    particles; a network that closes or opens the neck between two particles
    moves a saddle alone. On 12 held-out simulator stacks the boundary shift
    alone covered the true d50 in 9 (their errors were merges, z up to 6.3);
    with the separation doubt in 12, and in 10 of 10 of a second draw
    (``benchmarks/uncertainty.py``).

    Parameters
    ----------
    labels, probabilities, sigma
        The segmented volume, its calibrated probabilities, the card's boundary-shift sd.
    vs : tuple of float
    baseline : dict
        :func:`volume_metrics` of ``labels``.
    family_scale : dict, optional
    min_object_voxels : int
        The island cleaning of the shifted volumes
        (:func:`fibrecon.uncertainty.shifted_volumes`).
    h_doubt : float
        ``metrics: particle_h_doubt_um``; 0 leaves the separation doubt out.
    separated : list of dict, optional
        The particle metrics of ``labels`` at ``particle_h_um -+ h_doubt``,
        already computed (:func:`volume_metrics` ``also_h``); computed here
        if not given.
    other_shift : sequence of 3 float, optional
        The shift that gives the labels a second network's phase fractions
        (:func:`other_network_shift`): the metrics of the volume moved by it
        are one more term of the sd, and a percolation it gains or loses makes
        that tortuosity's sd infinite, as the +-2 sd bracket does.
    **kwargs
        Of :func:`volume_metrics`.

    Returns
    -------
    sds : dict
        ``<metric>_sd_segmentation``.
    doubt : list of str
    """
    kwargs = {**kwargs, "quiet": True, "tau_tol": SPREAD_TOL}
    shifted = [volume_metrics(v, vs, **kwargs)[0]
               for v in shifted_volumes(labels, probabilities, sigma,
                                        min_object_voxels=min_object_voxels)]
    if h_doubt > 0:  # the same labels, split into particles with a saddle moved by h_doubt
        if separated is None:
            h = kwargs["particle_h_um"]
            separated = [values for values, _ in particle_metrics(
                labels, vs, h=(h - h_doubt, h + h_doubt), sigma=kwargs["particle_sigma_um"],
                close_um=kwargs.get("particle_close_um", CLOSE_UM))]
        shifted += [{**baseline, **values} for values in separated]
    phases = kwargs["electronic_phases"]
    doubt = percolation_doubt(labels, probabilities, sigma,
                              {"pore": (PORE,), "electronic": tuple(phases)},
                              {ax: AXES[ax] for ax in kwargs["tortuosity_axes"]})
    if other_shift is not None:  # the other network's reading, as a boundary shift
        clean = cleaned_shift(labels, probabilities, other_shift,
                              min_object_voxels=min_object_voxels,
                              name="the other network's fractions")
        values = volume_metrics(clean, vs, **kwargs)[0]
        shifted.append(values)
        doubt |= {k for k, v in values.items() if k.startswith("tau_")
                  and isinstance(v, float) and np.isfinite(v) != np.isfinite(baseline.get(k, v))}
    doubt = sorted(doubt)
    sds = segmentation_sd(baseline, shifted, family_scale)
    for key in doubt:  # percolation changes within +-2 sd: the value is not determined
        sds[f"{key}_sd_segmentation"] = float("inf")
    return sds, doubt


def volume_metrics(labels: np.ndarray, vs, *, tortuosity_axes, electronic_phases, device,
                   conv_crit, particle_h_um, particle_sigma_um, dispersion_block_um,
                   particle_close_um: float = CLOSE_UM, quiet: bool = False,
                   tau_tol: float = 1e-4, also_h=()):
    """The scalar metrics of one label volume (every metric but profiles and spreads).

    A volume whose boundaries were moved (the segmentation sd) is separated
    into particles anew: merges and splits of particles are part of what a
    boundary shift changes (a reassignment of the old particles instead
    measured d50 coverage 58 % against 83 %, ``benchmarks/uncertainty.py``).
    Its tortuosity solves stop at ``tau_tol`` =
    :data:`fibrecon.tortuosity.SPREAD_TOL`.

    ``also_h``: further marker heights whose particle metrics are returned
    too, from the same distance map and flooding as ``particle_h_um``'s (the
    separation doubt of :func:`segmentation_uncertainty`: one flooding
    instead of two).

    Returns
    -------
    metrics : dict
    particles, aggregates : pandas.DataFrame
    also : list of dict
        :func:`particle_metrics` for each of ``also_h``.
    """
    stage = (lambda name: contextlib.nullcontext()) if quiet else _stage
    out = {"volume_um3": labels.size * float(np.prod(vs))}
    out.update(fraction_metrics(labels))

    # particles and dispersion
    with stage("particles"):
        (particle_values, particles), *also = particle_metrics(
            labels, vs, h=(particle_h_um, *also_h), sigma=particle_sigma_um,
            close_um=particle_close_um)
    out.update(particle_values)
    with stage("dispersion"):
        out.update(dispersion_metrics(labels, vs, block_um=dispersion_block_um))

    # transport
    for name, phases in (("pore", (PORE,)), ("electronic", tuple(electronic_phases))):
        with stage(f"tortuosity {name}"):
            out.update(transport(labels, phases, vs, tortuosity_axes, name=name, device=device,
                                 conv_crit=conv_crit, tol=tau_tol))

    # CBD and pores
    with stage("CBD network and coverage"):
        cbd_values, aggregates = cbd_metrics(labels, vs)
    out.update(cbd_values)
    with stage("local thickness"):
        out.update(thickness_metrics(labels, vs))
    with stage("interface areas"):
        out.update(interface_areas(labels, vs))
    return out, particles, aggregates, [values for values, _ in also]


def _notes(out: dict) -> list[str]:
    """Why some metrics are NaN or infinite (absent phase, no percolating path)."""
    notes = [f"phase {name} is absent: its size, thickness and network metrics are NaN or inf"
             for name in PHASES.values() if out.get(f"volume_fraction_{name}") == 0]
    for key, value in out.items():
        # the value itself, not its error bars (an infinite sd_segmentation is percolation in
        # doubt, noted below, not a network that does not connect)
        if key.startswith("tau_") and not key.endswith(("_sd_segmentation", "_sd_half_edge")) \
                and value == float("inf"):
            network, axis = key[4:].rsplit("_", 1)
            notes.append(f"the {network} network does not connect the two faces normal to "
                         f"{axis}: {key} = inf (no transport), relative value 0")
    if out.get("particles_whole") == 0 and out.get("volume_fraction_am", 0) > 0:
        notes.append(f"{NO_WHOLE_PARTICLE} ({out['particles_cut']} cut "
                     "by its faces): d10/d50/d90 and sphericity are NaN; the volume is only a "
                     "few particles wide, or the AM was separated into few large clusters")
    if out.get("percolation_in_doubt"):
        notes.append(f"{', '.join(out['percolation_in_doubt'])}: the network gains or loses its "
                     "spanning path within +-2 sd of the segmentation's boundary doubt, so the "
                     "segmentation does not decide the value: sd_segmentation = inf")
    return notes


def metrics_of(labels: np.ndarray, voxel_size, settings: MetricsSettings | None = None, *,
               probabilities=None, boundary_shift_sd=None, family_scale=None,
               min_object_voxels: int = VolumeSettings.min_object_voxels,
               uncertain_share=None, calibration_uncertain_share=None, other_network=None):
    """The metrics stage: :func:`sample_metrics` with a stage's settings.

    ``min_object_voxels`` is the volume stage's (``volume: min_object_voxels``);
    ``uncertain_share`` the segment stage's, ``calibration_uncertain_share`` the model
    card's, ``other_network`` the probe's second network (:func:`sample_metrics`).

    Returns
    -------
    The four results of :func:`sample_metrics`.
    """
    s = settings or MetricsSettings()
    electronic = (CBD,) if s.electronic_network == "cbd" else (AM, CBD)
    return sample_metrics(labels, voxel_size, tortuosity_axes=tuple(s.tortuosity_axes),
                          electronic_phases=electronic, device=s.device, conv_crit=s.conv_crit,
                          particle_h_um=s.particle_h_um, particle_sigma_um=s.particle_sigma_um,
                          particle_close_um=s.particle_close_um,
                          dispersion_block_um=s.dispersion_block_um,
                          probabilities=probabilities, boundary_shift_sd=boundary_shift_sd,
                          family_scale=family_scale, min_object_voxels=min_object_voxels,
                          particle_h_doubt_um=s.particle_h_doubt_um,
                          uncertain_share=uncertain_share,
                          calibration_uncertain_share=calibration_uncertain_share,
                          other_network=other_network)


def main(argv=None) -> None:
    """Command line: the metrics of a label volume segmented elsewhere (or by fibrecon).

    ``fibrecon-metrics LABELS.tif OUT.json [--voxel-um DZ DY DX] [--values P A C]``
    writes the metrics JSON as the workflow's metrics stage does (without the
    segmentation sd: there are no class probabilities) and, beside it,
    ``<OUT>_particles.tsv``. The voxel size comes from ``--voxel-um`` or from
    the file's ImageJ / OME-TIFF calibration (fibrecon's own volumes carry one).
    """
    import argparse
    import json
    from pathlib import Path

    from fibrecon import files  # the CLI reads and writes files; the functions above do not

    ap = argparse.ArgumentParser(prog="fibrecon-metrics", description=main.__doc__.splitlines()[0])
    ap.add_argument("labels", help="3D label TIFF (z, y, x): 0 pore, 1 AM, 2 CBD, or see --values")
    ap.add_argument("out", help="metrics JSON to write")
    ap.add_argument("--voxel-um", type=float, nargs=3, metavar=("DZ", "DY", "DX"),
                    help="voxel size in µm (default: the file's ImageJ / OME calibration)")
    ap.add_argument("--values", type=float, nargs=3, metavar=("PORE", "AM", "CBD"),
                    help="the file's values of the three phases (default: 0/1/2 as they are, "
                         "else three values in increasing order pore < AM < CBD)")
    ap.add_argument("--tortuosity-axes", default="zyx", help="axes of the tortuosity solves")
    ap.add_argument("--electronic-network", choices=["cbd", "cbd+am"],
                    default=MetricsSettings.electronic_network)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    path = Path(args.labels)
    labels = files.read_label_volume(path, args.values, all_phases=False)
    if args.voxel_um:
        voxel = tuple(args.voxel_um)
    else:
        meta = files.read_sem_metadata(path)
        if "pixel_size_um" not in meta or "slice_thickness_um" not in meta:
            raise SystemExit(f"{path}: no ImageJ / OME calibration of x, y and z in the file; "
                             "give --voxel-um DZ DY DX")
        voxel = (meta["slice_thickness_um"], *meta["pixel_size_um"])
        LOG.info("voxel size %s µm from %s", voxel, meta["origin"])
    check_edges(labels.shape, str(path))
    settings = MetricsSettings(tortuosity_axes=tuple(args.tortuosity_axes),
                               electronic_network=args.electronic_network)
    metrics, particles, _, _ = metrics_of(labels, voxel, settings)
    out = Path(args.out)
    files.write_json(out, {"sample": path.stem, "source": str(path),
                           "source_sha256": files.file_sha256(path), **metrics})
    files.write_table(out.with_name(out.stem + "_particles.tsv"), particles)
    print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))
                      and "_sd_" not in k}, indent=1, default=str))
    LOG.info("wrote %s and %s", out, out.with_name(out.stem + "_particles.tsv"))


if __name__ == "__main__":
    main()
