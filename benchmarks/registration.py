"""Registration with and without a fiducial, on stacks fibrecon did not tune on, beside PyStack3D.

Run: ``.venv/bin/python benchmarks/registration.py`` (``make bench`` does; about
10 minutes on 2 cores). Writes the section "Registration without a fiducial"
of benchmarks/RESULTS.md. ``--structure-only`` prints where the error comes
from instead (a stack without drift, as imaged and as ideal label images; 2 min).
``--spread`` measures the workflow's estimate of that error (the spread of
tile registrations, ``align.spread_tiles``) against the true error on 22
fiducial-free stacks and writes the section "Registration without a fiducial:
estimated error" (about 8 minutes).

Stacks: fibrecon's simulator without a cap (64 and 200 slices), and with a
32-row cap (found automatically, and given as a window); real-geometry label
volumes (../shared/data/nmc_label_volumes: MATBOX, taufactor, inpainter)
rendered by the separately written imaging model of ``benchmarks/foreign.py``
(its own drift, noise, shine-through), turned about the milling axis and
flipped at random, with and without a cap; and one volume tilted by 10
degrees about y, so that all its structures run obliquely through the
slices. Drift error = distance between the estimated and the true content
displacement of every slice (both 0 at slice 0), in pixels.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from foreign import label_volume, render, tilted  # noqa: E402
from results_md import write_section  # noqa: E402

from fibrecon.align import (AlignSettings, estimate_drift, estimate_drift_spread,  # noqa: E402
                            plan_registration)
from fibrecon.simulate import simulate_sample  # noqa: E402


def errors(drift, truth):
    """RMS and maximum of the per-slice drift error, px."""
    err = np.linalg.norm(np.asarray(drift) - truth, axis=1)
    return float(np.sqrt(np.mean(err**2))), float(err.max())


def pystack3d_drift(raw):
    """PyStack3D's registration: pystackreg translations of consecutive slices, summed."""
    from pystack3d.registration_calculation import tmat_calculation
    from scipy import ndimage as ndi

    imgs = raw.astype(np.float64).mean(axis=1)
    steps = np.zeros((len(imgs), 2))
    for z in range(1, len(imgs)):
        tmat = tmat_calculation(imgs[z - 1], imgs[z])[0]
        steps[z] = tmat[1, 2], tmat[0, 2]
    probe = ndi.gaussian_filter(np.random.default_rng(0).random((128, 128)), 2)
    sign = 1.0 if tmat_calculation(probe, ndi.shift(probe, (0.0, 3.0)))[0][0, 2] > 0 else -1.0
    return sign * np.cumsum(steps, axis=0)


def foreign(name, n_slices, field, seed, cap_px=0, tilt=None, kvs=(1.0, 3.0)):
    """A shared label volume, turned and flipped at random, rendered by benchmarks/foreign.py."""
    rng = np.random.default_rng(seed)
    vol = label_volume(name)
    if tilt is not None:
        vol = tilted(vol, tilt, "y")
    vol = np.rot90(vol, int(rng.integers(4)), axes=(1, 2))
    if rng.random() < 0.5:
        vol = vol[:, :, ::-1]
    margin = 12
    side = min(field + 2 * margin, vol.shape[1], vol.shape[2])
    vol = np.ascontiguousarray(vol[: n_slices + 12, :side, :side])
    st = render(vol, kvs, rng=rng, n_slices=min(n_slices, vol.shape[0] - 4), margin=margin,
                cap_px=cap_px)
    return st.raw, st.drift_px


def simulated(n_slices, seed, cap_px=0):
    s = simulate_sample((n_slices, 256, 256), porosity=0.33, d50_um=3.0, seed=seed,
                        cap_px=cap_px)
    return s.raw, s.drift_px


STACKS = [
    ("simulator, no cap, 64 x 256²", lambda: simulated(64, 41)),
    ("simulator, no cap, 200 x 256²", lambda: simulated(200, 42)),
    ("simulator, 32-row cap, 200 x 256²", lambda: simulated(200, 43, cap_px=32)),
    ("MATBOX NMC rendered, no cap, 200 x 256²",
     lambda: foreign("matbox_nmc1_251x301x301.tif", 200, 256, 1)),
    ("taufactor electrode rendered, no cap, 200 x 232² (its structure leans: 0.1 px/slice in x)",
     lambda: foreign("taufactor_electrode_256cube.tif", 200, 232, 2, kvs=(1.0, 5.0))),
    ("inpainter NMC rendered, no cap, 100 x 104²",
     lambda: foreign("inpainter_nmc_128cube.tif", 100, 104, 3, kvs=(2.0, 5.0))),
    ("MATBOX NMC rendered, 24-row cap, 200 x 256²",
     lambda: foreign("matbox_nmc1_251x301x301.tif", 200, 256, 4, cap_px=24)),
    ("taufactor rendered, 24-row cap, 200 x 232²",
     lambda: foreign("taufactor_electrode_256cube.tif", 200, 232, 5, cap_px=24)),
    ("MATBOX tilted 10° about y (all structure oblique), no cap, 150 x 200²",
     lambda: foreign("matbox_nmc1_251x301x301.tif", 150, 200, 6, tilt=10.0)),
]


#: The registration settings tried against the defaults on fiducial-free stacks.
VARIANTS = [("defaults", {}), ("apodisation 0", {"apod": 0.0}), ("apodisation 0.5", {"apod": 0.5}),
            ("band-pass (0.7, 3)", {"band_sigmas": (0.7, 3.0)}),
            ("band-pass (0.7, 20)", {"band_sigmas": (0.7, 20.0)}),
            ("band-pass (2, 8)", {"band_sigmas": (2.0, 8.0)}),
            ("1 reference", {"references": 1}), ("10 references", {"references": 10})]


def _variant_errors(stack, truth, kw):
    import fibrecon.align as align

    kw = dict(kw)
    default_apod = align.APODISATION
    align.APODISATION = kw.pop("apod", default_apod)
    try:
        return errors(estimate_drift(stack, window=None, downsample=1, **kw).drift, truth)
    finally:
        align.APODISATION = default_apod


def structure_only():
    """Where the fiducial-free error comes from, and whether other settings lower it.

    1. fibrecon's simulator, 200 x 256² slices with drift switched off, so every
       shift the registration reports is error: registered as imaged (raw) and
       as its ideal label images (pore 0.1, AM 1, CBD 0.5: no noise, blur,
       shine-through, curtains or charging).
    2. The settings of :data:`VARIANTS` (apodisation, band-pass, references;
       defaults: Tukey 0.25, (0.7, 8) px, 3) on that stack and on the
       fiducial-free stacks of :data:`STACKS` whose structure does not lean as
       a whole (all but the taufactor volume).
    """
    s = simulate_sample((200, 256, 256), porosity=0.33, d50_um=3.0, seed=42,
                        artifacts={"drift": 0.0})
    zero = np.zeros((len(s.raw), 2))
    grey = np.array([0.1, 1.0, 0.5], np.float32)[s.labels][:, None]
    lines = ["| simulator without drift, 200 x 256², registered | error RMS / max (px) |",
             "| --- | --- |"]
    for label, stack in (("as imaged", s.raw), ("ideal label images", grey)):
        rms, mx = _variant_errors(stack, zero, {})
        lines.append(f"| {label} | {rms:.2f} / {mx:.2f} |")
        print(lines[-1], flush=True)
    stacks = [("simulator without drift", (s.raw, zero))]
    stacks += [(label, make()) for label, make in STACKS
               if "no cap" in label and "taufactor" not in label]
    lines += ["", "| settings | " + " | ".join(lab.split(",")[0] + (" (tilted)" if "tilted" in lab
                                                                 else "") + f" {len(st[0])}"
                                              for lab, st in stacks) + " |",
              "| --- |" + " --- |" * len(stacks)]
    for name, kw in VARIANTS:
        cells = [f"{_variant_errors(raw, truth, kw)[0]:.2f}" for _, (raw, truth) in stacks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


def spread():
    """The estimated error of a registration on the structure against its true error.

    Stacks: the fiducial-free ones of :data:`STACKS`, ten more of fibrecon's
    simulator (64 x 256², seeds 100-109), and MATBOX and inpainter volumes
    rendered by ``benchmarks/foreign.py`` (64 slices, seeds 11-13). Per stack:
    the whole image registered as the workflow does without a fiducial, its
    true error, and :func:`fibrecon.align.estimate_drift_spread` with the
    default ``align.spread_tiles``.
    """
    tiles = AlignSettings.spread_tiles
    stacks = [(label.split(" (")[0], make) for label, make in STACKS if "no cap" in label]
    stacks += [(f"simulator, no cap, 64 x 256², seed {seed}",
                lambda seed=seed: simulated(64, seed)) for seed in range(100, 110)]
    for seed in (11, 12, 13):
        stacks += [(f"MATBOX NMC rendered, no cap, 64 x 256², seed {seed}",
                    lambda seed=seed: foreign("matbox_nmc1_251x301x301.tif", 64, 256, seed)),
                   (f"inpainter NMC rendered, no cap, 64 x 104², seed {seed}",
                    lambda seed=seed: foreign("inpainter_nmc_128cube.tif", 64, 104, seed,
                                              kvs=(2.0, 5.0)))]
    lines = [f"Without a fiducial the registration follows the structure; the align stage "
             f"estimates how far off it is from the spread of {tiles} x {tiles} tiles "
             "registered on their own (`align.spread_tiles`, the column `drift_sd_px` of the "
             "shifts table). Per stack: the true drift error of the whole-image registration "
             "(RMS over the slices), the estimate (RMS of the per-slice sd), their ratio, the "
             "share of slices whose true error lies within 2 sd, and the time of the estimate "
             "beside that of the registration itself. 2 cores, "
             "`.venv/bin/python benchmarks/registration.py --spread`.", "",
             "| stack | true error RMS (px) | estimated sd RMS (px) | estimate / true | slices "
             "within 2 sd | time: registration / estimate (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    summary = []
    for label, make in stacks:
        raw, truth = make()
        t = time.perf_counter()
        whole = estimate_drift(raw, window=None, downsample=1).drift
        t_reg = time.perf_counter() - t
        t = time.perf_counter()
        sd = estimate_drift_spread(raw, tiles, downsample=1)
        t_sd = time.perf_counter() - t
        err = np.linalg.norm(whole - truth, axis=1)
        true_rms, est_rms = float(np.sqrt(np.mean(err**2))), float(np.sqrt(np.mean(sd**2)))
        within = float(np.mean(err <= 2 * sd))
        summary.append((label, true_rms, est_rms, within))
        lines.append(f"| {label} | {true_rms:.2f} | {est_rms:.2f} | {est_rms / true_rms:.2f} | "
                     f"{within:.0%} | {t_reg:.1f} / {t_sd:.1f} |")
        print(lines[-1], flush=True)
    lean = [r for r in summary if "taufactor" in r[0]]
    rest = [r for r in summary if "taufactor" not in r[0]]
    ratios = [r[2] / r[1] for r in rest]
    lines += ["", f"Where the structure does not lean as a whole ({len(rest)} stacks): the "
              f"estimate is {min(ratios):.2f}-{max(ratios):.2f} x the true error RMS (median "
              f"{np.median(ratios):.2f}), the true error within 2 sd at "
              f"{min(r[3] for r in rest):.0%}-{max(r[3] for r in rest):.0%} of the slices "
              f"(median {np.median([r[3] for r in rest]):.0%}); the estimate is above 0.5 px "
              f"on {sum(r[2] > 0.5 for r in rest)} of them, the true error on "
              f"{sum(r[1] > 0.5 for r in rest)}. The taufactor volume, whose structure leans "
              "as a whole, is the case the estimate cannot see: "
              + "; ".join(f"true {r[1]:.2f} px, estimated {r[2]:.2f} px" for r in lean) + "."]
    write_section("Registration without a fiducial: estimated error", "\n".join(lines))
    print("\n".join(lines))


def main():
    if "--structure-only" in sys.argv[1:]:
        return structure_only()
    if "--spread" in sys.argv[1:]:
        return spread()
    rows = []
    for label, make in STACKS:
        t = time.perf_counter()
        raw, truth = make()
        made = time.perf_counter() - t
        plan = plan_registration(raw, "auto")
        t = time.perf_counter()
        auto = estimate_drift(raw, window=plan.window, downsample=1).drift
        speed = len(raw) / (time.perf_counter() - t)
        whole = estimate_drift(raw, window=None, downsample=1).drift
        try:
            peer = errors(pystack3d_drift(raw), truth)
        except ImportError:
            peer = (float("nan"), float("nan"))
        found = f"rows 0-{plan.window[1]}" if plan.window else "none"
        rows.append((label, found, *errors(auto, truth), *errors(whole, truth), *peer, speed))
        print(label, found, rows[-1][2:], f"(made in {made:.0f} s)", file=sys.stderr)
    head = ("| stack | static cap found (auto) | fibrecon, auto: RMS / max (px) | fibrecon, whole "
            "image: RMS / max | PyStack3D (pystackreg, consecutive): RMS / max | slices/s (auto) |")
    lines = [
        "Drift error (estimated vs true content displacement per slice, px) with the default "
        "`align.fiducial_window: auto` (a static cap at the top is found and registered on; "
        "none found: the whole image), the whole image, and PyStack3D's registration on the same "
        "stacks. Stacks: fibrecon's simulator (no cap / 32-row cap) and real-geometry label "
        "volumes from ../shared/data/nmc_label_volumes rendered by the separately written imaging "
        "model `benchmarks/foreign.py` (other grey levels, noise, drift and shine-through "
        "models; random 90° turn and flip; one tilted 10° about y). 2 cores, "
        "`.venv/bin/python benchmarks/registration.py`.", "", head,
        "| --- | --- | --- | --- | --- | --- |"]
    for label, found, ar, am, wr, wm, pr, pm, speed in rows:
        lines.append(f"| {label} | {found} | {ar:.2f} / {am:.2f} | {wr:.2f} / {wm:.2f} | "
                     f"{pr:.2f} / {pm:.2f} | {speed:.1f} |")
    peer_wins = sum(r[6] < r[2] for r in rows)
    capped = [r for r in rows if "cap," in r[0] and "no cap" not in r[0]]
    free = [r for r in rows if "no cap" in r[0]]
    lines += ["", f"Worst with a cap (auto): RMS {max(r[2] for r in capped):.2f} px, max "
              f"{max(r[3] for r in capped):.2f} px (target 0.3 / 1: met). Without a cap the "
              f"registration follows the structure: RMS {min(r[2] for r in free):.2f}-"
              f"{max(r[2] for r in free):.2f} px, max up to {max(r[3] for r in free):.2f} px "
              f"(target 0.5 / 1.5: not met; PyStack3D lower on {peer_wins} of {len(rows)} "
              "stacks). The "
              "taufactor volume's structure leans as a whole (its x-mirror drifts the other way), "
              "which no registration on the image content can tell from stage drift; where "
              "the structure does not lean as a whole, the error is mostly a linear lean of "
              "0.02-0.03 px/slice (the net inclination of the finite piece in view; RESULTS "
              "row 'registration without a fiducial') on top of the apparent motion "
              "of inclined surfaces, 1.4-3.5 px over 100-200 slices."]
    write_section("Registration without a fiducial", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
