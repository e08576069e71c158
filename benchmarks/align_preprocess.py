"""Alignment and preprocessing against the simulator's truth, beside PyStack3D.

Run: ``.venv/bin/python benchmarks/align_preprocess.py`` (``make bench`` does,
after installing benchmarks/requirements.txt). Prints markdown tables and
writes them between markers into benchmarks/RESULTS.md.

The stack: 200 slices of 256x256 pixels (+ a 32-row Pt cap with a fiducial),
1 and 3 kV, every artifact on. Twins of the same seed, each with one artifact
off (curtaining, brightness gradient and gain, grain contrast, charging,
noise), isolate what each step removes: every artifact has its own random
stream, so a twin differs from the stack only by that artifact.
PyStack3D (CEA-MetroCarac, pystack3d on PyPI) is run through its own step
functions on the same arrays: registration ``tmat_calculation`` (pystackreg,
translation, consecutive slices, as its workflow does), destriping ``vsnr2d``
(its default) and ``destriping_from_wavelets``, background ``bkg_eval``
(polynomial, HuberT weights).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import write_section  # noqa: E402
from truth_stacks import CAP, aligned_with_true_drift, cnr, phase_masks  # noqa: E402
from fibrecon.align import (aligned_slices, apply_drift, common_region,  # noqa: E402
                            estimate_drift, estimate_drift_consecutive)
from fibrecon.evaluate import segmentation_scores  # noqa: E402
from fibrecon.preprocess import (PreprocessParams, destripe, estimate_corrections,  # noqa: E402
                                 preprocess_stack, preprocessed_slices)
from fibrecon.segment import segment_multiotsu  # noqa: E402
from fibrecon.simulate import simulate_sample  # noqa: E402

SHAPE = (200, 256, 256)


def _errors(drift, truth):
    err = np.linalg.norm(drift - truth, axis=1)
    return float(np.sqrt(np.mean(err**2))), float(err.max()), float(err[-1])


def _pystack3d_drift(stack, window=None):
    """Consecutive pystackreg translations, accumulated (PyStack3D's registration)."""
    from pystack3d.registration_calculation import tmat_calculation

    imgs = stack[:, 0].astype(np.float64)
    if window is not None:
        imgs = imgs[:, window[0]: window[1], window[2]: window[3]]
    steps = np.zeros((len(imgs), 2))
    for z in range(1, len(imgs)):
        tmat = tmat_calculation(imgs[z - 1], imgs[z])[0]
        steps[z] = tmat[1, 2], tmat[0, 2]  # (ty, tx)
    # sign: calibrated on a known shift
    probe = ndi.gaussian_filter(np.random.default_rng(0).random((128, 128)), 2)
    t = tmat_calculation(probe, ndi.shift(probe, (0.0, 3.0)))[0][0, 2]
    sign = 1.0 if t > 0 else -1.0
    return sign * np.cumsum(steps, axis=0)


def _stripe_power(stack):
    cols = stack.mean(axis=-2)
    return float(np.mean((cols - ndi.gaussian_filter1d(cols, 5, axis=-1)) ** 2))


def _noise_cnr(img, quiet, am, pore):
    """Phase contrast over the noise alone: the std of (image - same image simulated without
    shot and detector noise, processed the same way) in both phases."""
    noise = img - quiet
    return float((img[am].mean() - img[pore].mean())
                 / np.sqrt(0.5 * (noise[am].var() + noise[pore].var())))


def _residual_variation(img, flat, am, pore):
    """Residual macroscopic brightness variation per phase, in units of the AM-pore contrast.

    ``flat`` is the same stack processed the same way but simulated without
    the brightness gradient and slice gain (same seed; the other artifacts and
    the structure are the same): the 16-px low-pass of the difference is what
    is left of the gradient.
    """
    contrast = img[am].mean() - img[pore].mean()
    diff = (img - img[pore].mean()) / contrast - (flat - flat[pore].mean()) / (
        flat[am].mean() - flat[pore].mean())
    out = []
    for mask in (am, pore):
        num = ndi.gaussian_filter(np.where(mask, diff, 0.0), (0, 16, 16))
        den = ndi.gaussian_filter(mask.astype(float), (0, 16, 16))
        out.append(float((num[den > 0.3] / den[den > 0.3]).std()))
    return out


def main():
    rows = []
    kw = dict(shape=SHAPE, voxel_size=(0.05, 0.05, 0.05), kvs=(1.0, 3.0), porosity=0.33,
              d50_um=3.0, seed=31, cap_px=CAP)
    t0 = time.perf_counter()
    full = simulate_sample(**kw)
    no_curtain = simulate_sample(**kw, artifacts={"curtaining": 0})
    flat = simulate_sample(**kw, artifacts={"gradient": 0, "slice_gain": 0})
    no_grain = simulate_sample(**kw, artifacts={"grain_contrast": 0})
    no_charge = simulate_sample(**kw, artifacts={"charging": 0})
    quiet = simulate_sample(**kw, artifacts={"noise": 0})  # (each artifact has its own RNG)
    print(f"simulated 6 x {SHAPE} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    truth = full.drift_px
    nz = SHAPE[0]

    # ---------------------------------------------------------- registration
    reg = []
    window = (0, CAP, 0, SHAPE[2])
    for name, fn in [
        ("fibrecon, fiducial window, 3 references (default)",
         lambda: estimate_drift(full.raw, window=window, downsample=1).drift),
        ("fibrecon, whole image, 3 references",
         lambda: estimate_drift(full.raw).drift),
        ("naive consecutive phase correlation, whole image",
         lambda: estimate_drift_consecutive(full.raw)),
        ("PyStack3D (pystackreg translation), fiducial window",
         lambda: _pystack3d_drift(full.raw, window)),
        ("PyStack3D (pystackreg translation), whole image",
         lambda: _pystack3d_drift(full.raw)),
    ]:
        t = time.perf_counter()
        drift = fn()
        dt = time.perf_counter() - t
        rms, mx, end = _errors(drift, truth)
        reg.append((name, rms, mx, end, nz / dt))
        print(name, rms, mx, file=sys.stderr)

    # ---------------------------------------------------------- preprocessing
    region = common_region(full.drift_px, full.raw.shape[2:])

    def aligned(sample):  # the twins in the window of `full`
        return aligned_with_true_drift(sample, region)

    a_full, ty, tx = aligned(full)
    a_clean, _, _ = aligned(no_curtain)
    a_flat, _, _ = aligned(flat)
    a_no_grain, _, _ = aligned(no_grain)
    a_no_charge, _, _ = aligned(no_charge)
    a_quiet, _, _ = aligned(quiet)
    labels = full.labels[:, ty, tx]
    am, pore = phase_masks(labels)
    ch = 0  # 1 kV: noisiest, most charging
    stripes = _stripe_power(a_full[:, ch] - a_clean[:, ch])

    from pystack3d.bkg_removal import bkg_eval, powers_from_orders
    from pystack3d.destriping import destriping_from_wavelets
    from pyvsnr import vsnr2d

    vsnr_filters = [{"name": "Gabor", "noise_level": 20, "sigma": [0.5, 200], "theta": 0}]
    destripers = [
        ("fibrecon wavelet-FFT (db4, 4 levels)", lambda im: destripe(im)),
        ("PyStack3D wavelet-FFT (coif3, 4 levels, sigma 4)",
         lambda im: destriping_from_wavelets(im, "coif3", 4, 4)[: im.shape[0], : im.shape[1]]),
        ("PyStack3D VSNR (its default Gabor filter)",
         lambda im: vsnr2d(im, vsnr_filters, maxit=100, cvg_threshold=1e-2, norm=False)),
    ]
    dest = []
    sub = slice(0, nz, 10)  # every 10th slice: VSNR is slow
    for name, fn in destripers:
        t = time.perf_counter()
        on = np.stack([fn(im) for im in a_full[sub, ch]])
        dt = (time.perf_counter() - t) / len(on)
        off = np.stack([fn(im) for im in a_clean[sub, ch]])
        residual = _stripe_power(on - off)
        ref = _stripe_power(a_full[sub, ch] - a_clean[sub, ch])
        dest.append((name, ref / max(residual, 1e-30), 1.0 / dt))
        print(name, ref / residual, file=sys.stderr)

    # full preprocessing vs raw, and PyStack3D background removal on the same input
    # (table row, segmentation row, settings): the defaults and the optional steps of issue 4
    p = PreprocessParams(denoise="gaussian")
    charging = PreprocessParams(denoise="gaussian", charging=True)
    sigma_filter = PreprocessParams(charging=True, denoise="sigma_filter")
    variants = [
        ("fibrecon preprocess (defaults)", "preprocessed (defaults)", p),
        ("fibrecon preprocess + charging removal (`charging: true`)",
         "preprocessed + charging removal", charging),
        ("fibrecon + charging removal + bilateral (`denoise: bilateral`, sigma 5)",
         "preprocessed + charging removal + bilateral",
         PreprocessParams(charging=True, denoise="bilateral", denoise_sigma=5.0)),
        ("fibrecon + charging removal + sigma filter (`denoise: sigma_filter`, radius 24)",
         "preprocessed + charging removal + sigma filter", sigma_filter)]
    processed, seconds = [], []
    for _, _, params in variants:
        t = time.perf_counter()
        processed.append(preprocess_stack(a_full, params))
        seconds.append((time.perf_counter() - t) / nz)
    ours = processed[0]
    raw_only = dict(denoise="none", destripe=False, background_order=None)
    raw_norm = preprocess_stack(a_full, **raw_only)
    powers = powers_from_orders([2, 2], True)

    def pystack3d_bkg(stack):
        return np.stack([bkg_eval(ndi.gaussian_filter(im, 2), powers, skip_factors=(4, 4),
                                  preserve_avg=True)[0] for im in stack[:, ch]])

    t = time.perf_counter()
    bkg = pystack3d_bkg(a_full)
    t_bkg = (time.perf_counter() - t) / nz
    rows = [("raw (aligned, grey levels stretched)", raw_norm[:, ch],
             preprocess_stack(a_flat, **raw_only)[:, ch],
             preprocess_stack(a_quiet, **raw_only)[:, ch])]
    rows += [(name, out[:, ch], preprocess_stack(a_flat, params)[:, ch],
              preprocess_stack(a_quiet, params)[:, ch])
             for (name, _, params), out in zip(variants, processed)]
    rows += [("PyStack3D bkg_removal (2D poly order 2, all phases, Gaussian sigma 2 first)", bkg,
              pystack3d_bkg(a_flat), pystack3d_bkg(a_quiet))]
    pre = []
    for name, img, ref, quiet_img in rows:
        res_am, res_pore = _residual_variation(img, ref, am, pore)
        pre.append((name, cnr(img, am, pore), _noise_cnr(img, quiet_img, am, pore), res_am,
                    res_pore))
    no_grain_cnr = (cnr(preprocess_stack(a_no_grain, **raw_only)[:, ch], am, pore),
                    cnr(preprocess_stack(a_no_grain, p)[:, ch], am, pore),
                    cnr(preprocess_stack(a_no_grain, charging)[:, ch], am, pore))
    no_charge_cnr = cnr(preprocess_stack(a_no_charge, p)[:, ch], am, pore)
    charged = estimate_corrections(a_full, charging)["charging_fraction"]
    charged_clean = estimate_corrections(a_no_charge, charging)["charging_fraction"]
    seg = []
    for name, stack in [("raw", raw_norm), *((n, out) for (_, n, _), out in zip(variants,
                                                                                 processed))]:
        s = segmentation_scores(segment_multiotsu(stack), labels)
        seg.append((name, s["iou_pore"], s["iou_am"], s["iou_cbd"]))

    # ---------------------------------------------------------- throughput at 1024x1024
    big = simulate_sample((24, 1024, 1024), (0.05, 0.05, 0.05), (1.0, 3.0), porosity=0.33,
                          d50_um=5.0, seed=32, cap_px=CAP)

    def rate(work, repeats=3):  # slices/s, the median of 3 runs (this machine's speed drifts)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            work()
            times.append(time.perf_counter() - t)
        return len(big.raw) / float(np.median(times))

    def align_big():
        apply_drift(big.raw, estimate_drift(big.raw, window=(0, CAP, 0, 1024), downsample=1).drift)

    def preprocess_big(params):
        for _ in preprocessed_slices(big.raw, params, estimate_corrections(big.raw, params)):
            pass

    align_rate = rate(align_big)
    pre_rate = rate(lambda: preprocess_big(p))
    charging_rate = rate(lambda: preprocess_big(charging))
    sigma_rate = rate(lambda: preprocess_big(sigma_filter), repeats=1)  # 30 s a run

    lines = [f"Simulated stack {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} (+{CAP}-row cap with fiducial), "
             "1 and 3 kV, all artifacts on, seed 31. `.venv/bin/python "
             "benchmarks/align_preprocess.py`.", "",
             "Drift against the true drift (target: RMS <= 0.3 px, max <= 1 px):", "",
             "| method | RMS error (px) | max error (px) | error at last slice (px) | slices/s |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {a:.3f} | {b:.3f} | {c:.3f} | {d:.0f} |" for n, a, b, c, d in reg]
    lines += ["", f"Curtaining (1 kV, every 10th slice): stripe power of (with - without "
              f"curtains) before / after (target >= 10x):", "",
              "| destriping | stripe power reduced | slices/s (256x256) |", "| --- | --- | --- |"]
    lines += [f"| {n} | {a:.0f}x | {b:.1f} |" for n, a, b in dest]
    lines += ["", "Phase contrast and residual brightness variation (1 kV; target CNR >= 3x raw, "
              "residual low-frequency variation within a phase <= 2 % of the AM-pore contrast; "
              "residual = std of the 16-px low-pass of (image - same image simulated without gradient "
              "and slice gain) per phase):",
              "", "| input | CNR AM/pore | CNR over the noise alone | residual AM (% contrast) | "
              "residual pore (% contrast) |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {a:.2f} | {e:.2f} | {100 * b:.1f} | {100 * c:.1f} |"
              for n, a, e, b, c in pre]
    lines += ["", f"CNR = (mean AM - mean pore) / pooled std within the phases (3-px eroded "
              f"masks), raised {pre[1][1] / pre[0][1]:.2f}x by the defaults, "
              f"{pre[2][1] / pre[0][1]:.2f}x with charging removal, "
              f"{pre[3][1] / pre[0][1]:.2f}x with charging removal and the bilateral filter, "
              f"{pre[4][1] / pre[0][1]:.2f}x with charging removal and the sigma filter "
              f"(target 3x). What limits it is within-phase variation that is not noise: "
              f"charging first (the same stack simulated without charging, default "
              f"preprocessing: CNR {no_charge_cnr:.2f}), then grain contrast: the stack simulated "
              f"without it gives {no_grain_cnr[0]:.2f} raw, {no_grain_cnr[1]:.2f} preprocessed and "
              f"{no_grain_cnr[2]:.2f} with charging removal ({no_grain_cnr[2] / pre[0][1]:.2f}x "
              f"the raw stack's CNR). Per-grain brightness varies at the grain size (0.8 um, "
              f"16 px): the bilateral filter (sigma 5 px) averages within a grain; Lee's sigma "
              f"filter averages every pixel within 24 px whose grey level is within 15 % of the "
              f"range of its own, so across the grains of a phase but not across phases. "
              f"Charging removal "
              f"replaced {100 * charged[:, 0].mean():.1f} % (1 kV) / "
              f"{100 * charged[:, 1].mean():.1f} % (3 kV) of the pixels; on the charge-free twin "
              f"{100 * charged_clean[:, 0].mean():.2f} % / "
              f"{100 * charged_clean[:, 1].mean():.2f} %. "
              f"CNR over the noise alone divides the same contrast by the std of (image - the "
              f"same stack simulated without shot and detector noise, processed the same way)."]
    lines += ["", f"Time per slice (2 channels, 256x256): fibrecon preprocess "
              f"{1000 * seconds[0]:.0f} ms, "
              f"with charging removal {1000 * seconds[1]:.0f} ms, with charging removal and the "
              f"bilateral filter {1000 * seconds[2]:.0f} ms, with charging removal and the "
              f"sigma filter {1000 * seconds[3]:.0f} ms; "
              f"PyStack3D bkg_removal (1 channel) {1000 * t_bkg:.0f} ms.", "",
              "Classical multi-Otsu segmentation before / after preprocessing:", "",
              "| input | IoU pore | IoU AM | IoU CBD |", "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {a:.3f} | {b:.3f} | {c:.3f} |" for n, a, b, c in seg]
    lines += ["", f"Throughput at 1024x1024, 2 kV channels, 2 cores (median of 3 runs): align "
              f"{align_rate:.1f} "
              f"slices/s (target >= 20), preprocess {pre_rate:.1f} slices/s (target >= 5), "
              f"with charging removal {charging_rate:.1f} slices/s, with charging removal and "
              f"the sigma filter {sigma_rate:.2f} slices/s (one run).",
              ]
    section = "\n".join(lines)
    print(section)
    write_section("align/preprocess vs truth and PyStack3D (benchmarks/align_preprocess.py)",
                  section)


if __name__ == "__main__":
    main()
