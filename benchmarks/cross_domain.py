"""Segmentation that transfers: train with domain randomisation, score on foreign domains.

``train`` continues a model on a mix of the project's simulator stacks and
domain-randomised stacks (:mod:`fibrecon.domain`: simulator microstructures
at 20-80 nm pixels and the real-geometry label volumes MATBOX NMC and
SliceGAN NMC, every appearance drawn at random). It runs in rounds of
``--steps`` optimiser steps and writes ``OUT/latest.pt`` after each round, so
an interrupted run resumes where it stopped (CPU training in the background);
the committed checkpoint ``resources/models/unet_1kV_3kV_randomised.pt``
resumes the same way when given as ``--init`` (with the same data settings).
The kV channels, the neighbour-slice context and the preprocessing (e.g. the
1 kV model's Gaussian filter) come from the ``--init`` model's card, so a
single-kV model is continued on the inputs it was made for.

``evaluate`` scores models, and multi-Otsu, on four test domains none of them
was trained on, each built by different means:

a. ``simulator``: fibrecon's simulator with held-out seeds and microstructures
   (the test stacks of ``benchmarks/segmentation.py``, every artifact at 1),
   and ``simulator_strong`` (1.5, noise 2.5: beyond the training range);
b. ``foreign``: the held-out real-geometry volumes (microstructure-inpainter
   NMC 128³, TauFactor electrode 256³) rendered by the separately written
   imaging model ``benchmarks/foreign.py``, random 90-degree turns and flips,
   moderate and strong noise, no drift;
c. ``foreign_cbd_bright``: the same with the CBD brighter than the AM;
   ``foreign_fine``: the volumes imaged at half their pixel size (each voxel
   2 x 2 pixels in y, x), where their thin CBD films are 2-4 px thick instead
   of 1-2 px, as a FIB-SEM at 10-20 nm sees them;
d. ``nanoct``: the 12 real nano-CT slices of ``../shared/data/segmentpy_nmc_nanoct``
   zero-shot (one channel, given to every kV and context input).

Every model sees each domain rendered at its own kV channels and
preprocessed as its card says (``model_preprocess``); multi-Otsu sees the
stacks without preprocessing. Per-phase IoU over all voxels of a domain; the worst of a-c per phase is the
figure the targets refer to (pore >= 0.93, AM >= 0.96, CBD >= 0.80).

Run::

    .venv/bin/python benchmarks/cross_domain.py train --out .bench/transfer [--rounds 6]
        [--init MODEL] [--width W]   (--width: the --init model widened first, same logits)
    .venv/bin/python benchmarks/cross_domain.py evaluate MODEL [MODEL ...] [--write]
    .venv/bin/python benchmarks/cross_domain.py signals [MODEL] [--write]
    .venv/bin/python benchmarks/cross_domain.py agreement [--write]

``signals`` asks whether a stack the network fails on can be told without
labels: per stack, IoU beside the share of uncertain voxels and the label
changes under an x-mirror.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import foreign  # noqa: E402
from results_md import write_section  # noqa: E402

from fibrecon import files  # noqa: E402
from fibrecon.evaluate import iou_from_confusion  # noqa: E402
from fibrecon.infer import context_image, predict_probabilities, prepare_for_inference  # noqa: E402
from fibrecon.preprocess import PreprocessParams, preprocess_stack  # noqa: E402
from fibrecon.segment import SegmentSettings, segment_multiotsu  # noqa: E402
from fibrecon.training import (TrainSettings, confusion, randomised_record,  # noqa: E402
                               randomised_stacks, synthetic_stacks, train_model)
from fibrecon.unet import load_model, save_model, widen  # noqa: E402

KVS = [1.0, 3.0]
SHIPPED = ROOT / "resources" / "models" / "unet_1kV_3kV.pt"
TRAIN_VOLUMES = ["matbox_nmc1_251x301x301.tif", "slicegan_nmc_30x252x253.tif"]
TEST_VOLUMES = ["inpainter_nmc_128cube.tif", "taufactor_electrode_256cube.tif"]
PRE = PreprocessParams(denoise="none")  # the workflow's default (config/config.yaml)
DOMAINS = ["simulator", "simulator_strong", "foreign", "foreign_cbd_bright", "foreign_fine",
           "nanoct"]
TARGETS = {"iou_pore": 0.93, "iou_am": 0.96, "iou_cbd": 0.80}


# ----------------------------------------------------------------------------- test domains
@functools.lru_cache(maxsize=2)
def _simulator_test_stacks(pre: PreprocessParams = PRE):
    import segmentation
    return tuple(segmentation.test_stacks(pre))


@functools.lru_cache(maxsize=3)
def _foreign_raw(domain: str, n_slices: int, seed: int | None = None, strengths=(1.0, 2.0)):
    """The rendered stacks of a foreign domain, before preprocessing: (name, raw, labels).

    ``seed`` None: the draw of ``evaluate``; another seed, another draw (``fallback``)."""
    out = []
    if seed is None:
        seed = {"foreign": 4242, "foreign_cbd_bright": 4343}.get(domain, 4444)
    rng = np.random.default_rng(seed)
    for name in TEST_VOLUMES:
        vol = foreign.label_volume(name)
        if domain == "foreign_fine":  # imaged at half the pixel size: a 128² window, x2
            y0, x0 = (int(rng.integers(n - 128 + 1)) for n in vol.shape[1:])
            vol = np.repeat(np.repeat(vol[:, y0:y0 + 128, x0:x0 + 128], 2, 1), 2, 2)
        for strength in strengths:
            lab = np.rot90(vol, int(rng.integers(4)), axes=(1, 2))
            if rng.random() < 0.5:
                lab = lab[:, ::-1]
            z0 = int(rng.integers(0, len(lab) - n_slices - 24))
            lab = np.ascontiguousarray(lab[z0:z0 + n_slices + 24])
            st = foreign.render(lab, KVS, rng=rng, n_slices=n_slices, noise=strength,
                                texture=strength, curtains=max(strength - 1.0, 0.0),
                                cbd_brighter=domain != "foreign", drift_step_px=0.0,
                                shine=0.45 * strength)
            out.append((f"{name.split('_')[0]}-x{strength:g}", st.raw, st.labels))
    return tuple(out)


def domain_stacks(domain: str, n_slices: int = 24, pre: PreprocessParams = PRE):
    """Test stacks of one domain: list of dicts with ``images`` (preprocessed by ``pre``, as
    the workflow does for a model trained with it; the nano-CT slices as read) and ``labels``."""
    if domain in ("simulator", "simulator_strong"):
        setting = "default" if domain == "simulator" else "strong"
        return [{"name": f"sim-{s['setting']}-{s['seed']}", "images": s["images"],
                 "labels": s["labels"]} for s in _simulator_test_stacks(pre)
                if s["setting"] == setting]
    if domain in ("foreign", "foreign_cbd_bright", "foreign_fine"):
        return [{"name": name, "images": preprocess_stack(raw, pre), "labels": labels}
                for name, raw, labels in _foreign_raw(domain, n_slices)]
    if domain == "nanoct":
        import real_segmentation as rs
        out = []
        for name in rs.TRAIN + rs.TEST:
            img, lab = rs.load(name)
            out.append({"name": f"nanoct-{name}", "images": np.repeat(img[None, None], 2, 1),
                        "labels": lab[None]})
        return out
    raise ValueError(f"unknown domain {domain!r}; known: {DOMAINS}")


def labeller(net, card):
    """A function (images (z, c, y, x), z) -> the model's labels of slice z, on the CPU."""
    multiple = net.multiple
    model = prepare_for_inference(net, "cpu")
    channels = [KVS.index(float(k)) for k in card["kvs"]]

    def labels(images, z):
        return predict_probabilities(model, context_image(images, z, channels, card["context"]),
                                     multiple=multiple, tile=1024, device="cpu").argmax(0)
    return labels


def model_preprocess(card) -> PreprocessParams:
    """The preprocessing a model was trained with (the workflow's ``denoise: auto``)."""
    return PreprocessParams.from_record(card["preprocess"])


def score(net, card, stacks) -> dict:
    """Per-phase IoU of a model over every voxel of ``stacks``."""
    label = labeller(net, card)
    cm = torch.zeros(3, 3, dtype=torch.long)
    for st in stacks:
        for z in range(len(st["labels"])):
            cm += confusion(torch.from_numpy(label(st["images"], z)),
                            torch.from_numpy(st["labels"][z].astype(np.int64)))
    return iou_from_confusion(cm)


def score_multiotsu(stacks) -> dict:
    cm = torch.zeros(3, 3, dtype=torch.long)
    for st in stacks:
        pred = segment_multiotsu(np.asarray(st["images"], np.float32))
        cm += confusion(torch.from_numpy(pred.astype(np.int64)),
                        torch.from_numpy(st["labels"].astype(np.int64)))
    return iou_from_confusion(cm)


def real_sem(nets, figure=None) -> dict:
    """Phase fractions each model gives the real SEM cross-section (no labels exist for it).

    ``../shared/data/sem_images/nmc_cathode_sem_682x1024.tif`` (tldr-group/samba-web,
    MIT): NMC with CBD brighter than the AM, curtains and a charging patch.
    One channel, preprocessed as the workflow does, given to every kV input.
    """
    import tifffile

    img = tifffile.imread(foreign.DATA / "sem_images" / "nmc_cathode_sem_682x1024.tif")
    img = np.asarray(img, np.float32)
    if img.ndim == 3:
        img = img[..., 0] if img.shape[-1] in (3, 4) else img[0]
    out, labels = {}, {}
    for name, (net, card) in nets.items():
        stack = np.repeat(preprocess_stack(img[None, None], model_preprocess(card)), 2, axis=1)
        labels[name] = labeller(net, card)(stack, 0)
        out[name] = {p: round(float((labels[name] == i).mean()), 4)
                     for i, p in enumerate(("pore", "am", "cbd"))}
    labels["multiotsu"] = segment_multiotsu(np.repeat(preprocess_stack(img[None, None], PRE),
                                                      2, axis=1))[0]
    out["multiotsu"] = {p: round(float((labels["multiotsu"] == i).mean()), 4)
                        for i, p in enumerate(("pore", "am", "cbd"))}
    if figure:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap

        cmap = ListedColormap(["#2b2b2b", "#4f9fd8", "#f0a030"])
        fig, axes = plt.subplots(1, len(labels) + 1, figsize=(4 * (len(labels) + 1), 3.2))
        axes[0].imshow(img, cmap="gray")
        axes[0].set_title("real SEM cross-section (NMC)")
        for ax, (name, lab) in zip(axes[1:], labels.items()):
            ax.imshow(lab, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
            f = out[name]
            ax.set_title(f"{name}\npore {f['pore']:.0%}  AM {f['am']:.0%}  CBD {f['cbd']:.0%}")
        for ax in axes:
            ax.axis("off")
        fig.suptitle("No labels exist for this image: look where the bright CBD goes "
                     "(dark grey pore, blue AM, orange CBD)", fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.9))
        files.write_figure(figure, fig)
    return out


def cmd_evaluate(args):
    torch.set_num_threads(2)
    models = {Path(m).stem: m for m in args.models}
    results = {"models": {k: str(Path(v).resolve().relative_to(ROOT)) for k, v in models.items()},
               "domains": {}, "command": ".venv/bin/python benchmarks/cross_domain.py "
               + " ".join(sys.argv[1:])}
    nets = {k: load_model(v) for k, v in models.items()}
    for domain in args.domains:
        t = time.perf_counter()
        row = {k: score(net, card, domain_stacks(domain, pre=model_preprocess(card)))
               for k, (net, card) in nets.items()}
        stacks = domain_stacks(domain)
        row["multiotsu"] = score_multiotsu(stacks)
        results["domains"][domain] = {"stacks": [s["name"] for s in stacks], "iou": row,
                                      "voxels": int(sum(s["labels"].size for s in stacks))}
        print(f"{domain} ({time.perf_counter() - t:.0f} s):", json.dumps(row), flush=True)
    if args.sem:
        results["real_sem_fractions"] = real_sem(nets, args.figure)
        print("real SEM:", json.dumps(results["real_sem_fractions"]), flush=True)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    files.write_json(out, results)
    if args.write:
        write_section("Segmentation across domains (issue 17)", report(results))


def report(results: dict) -> str:
    names = list(next(iter(results["domains"].values()))["iou"])
    lines = ["Per-phase IoU over every voxel of each test domain (none used in training; "
             "`benchmarks/cross_domain.py` docstring): (a) `simulator` / `simulator_strong`: "
             "fibrecon's simulator, held-out seeds and microstructures, artifacts at 1 / at "
             "1.5 with noise 2.5; (b) `foreign`: the held-out real-geometry volumes "
             "(microstructure-inpainter NMC, TauFactor electrode) rendered by the separately "
             "written imaging model `benchmarks/foreign.py` at moderate and strong noise; "
             "(c) `foreign_cbd_bright`: the same with CBD brighter than AM; `foreign_fine`: the "
             "same volumes at half the pixel size; (d) `nanoct`: 12 real nano-CT slices, "
             "zero-shot, one channel given to every input. Models: "
             + ", ".join(f"`{k}` = `{v}`" for k, v in results["models"].items())
             + "; multi-Otsu on the same preprocessed input. Targets (issue 17): worst of "
             "(a)-(c) pore >= 0.93, AM >= 0.96, CBD >= 0.80, no loss above 0.01 on (a). "
             "Command: `" + results.get("command", "") + "`.", "",
             "| domain | model | pore | AM | CBD |", "| --- | --- | --- | --- | --- |"]
    for domain, d in results["domains"].items():
        for name in names:
            c = d["iou"][name]
            lines.append(f"| {domain} ({len(d['stacks'])} stacks, {d['voxels'] / 1e6:.1f} Mvox) "
                         f"| {name} | {c['iou_pore']:.3f} | {c['iou_am']:.3f} | "
                         f"{c['iou_cbd']:.3f} |")
    abc = [d for k, d in results["domains"].items() if k != "nanoct"]
    verdicts = []
    if abc:
        for name in names:
            worst = {p: min(d["iou"][name][p] for d in abc) for p in TARGETS}
            lines.append(f"| **worst of {len(abc)} (a-c)** | {name} | {worst['iou_pore']:.3f} "
                         f"| {worst['iou_am']:.3f} | {worst['iou_cbd']:.3f} |")
            if name != "multiotsu":
                met = [p[4:] for p, t in TARGETS.items() if worst[p] >= t]
                verdicts.append(f"`{name}`: worst-domain target met for "
                                f"{', '.join(met) if met else 'no phase'}")
        lines += ["", "; ".join(verdicts) + "."]
    if "real_sem_fractions" in results:
        lines += ["", "Real SEM cross-section (`../shared/data/sem_images/nmc_cathode_sem_682x1024.tif`, "
                  "no labels exist; CBD brighter than AM, a saturated band): phase fractions each "
                  "labelling gives (figure `docs/cross_domain_sem.png`)", "",
                  "| model | pore | AM | CBD |", "| --- | --- | --- | --- |"]
        for name, f in results["real_sem_fractions"].items():
            lines.append(f"| {name} | {f['pore']:.3f} | {f['am']:.3f} | {f['cbd']:.3f} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- label-free signals
def cmd_signals(args):
    """Can a stack the network fails on be told without labels? Per stack of every domain:
    IoU, the share of uncertain voxels (calibrated top probability < 0.8) overall and among
    the voxels predicted CBD, the share whose label changes when the slice is mirrored
    in x, and the largest split of a predicted phase into two grey populations
    (:class:`fibrecon.segment.PhaseGreyHistograms`; every 8th slice); then the real SEM
    cross-section (no labels)."""
    import tifffile

    from fibrecon.segment import GREY_SPLIT_MIN_SHARE, PhaseGreyHistograms
    from fibrecon.uncertainty import UNCERTAIN_BELOW, calibrate

    torch.set_num_threads(2)
    net, card = load_model(args.model)
    model = prepare_for_inference(net, "cpu")
    temperature = card.get("calibration", {}).get("temperature", 1.0)
    channels = [KVS.index(float(k)) for k in card["kvs"]]
    centre = slice(card["context"] * len(channels), (card["context"] + 1) * len(channels))
    lines = [f"Model `{Path(args.model).resolve().relative_to(ROOT)}`; every 8th slice of each "
             "stack. Uncertain: calibrated top probability below "
             f"{UNCERTAIN_BELOW}; flip: share of voxels whose label changes when the slice is "
             "mirrored in x; grey split: the predicted phase whose voxels fall furthest into two "
             "grey populations (difference of the means of the two sides of its Otsu threshold "
             "over their pooled sd; the smaller side holding at least "
             f"{GREY_SPLIT_MIN_SHARE:.0%} of the phase's voxels; one Gaussian population gives "
             "2.65; segment warns above 4.5). Command: `.venv/bin/python "
             "benchmarks/cross_domain.py signals"
             + ("" if Path(args.model).resolve() == SHIPPED.resolve() else f" {args.model}")
             + "`.", "",
             "| domain | stack | IoU pore | AM | CBD | uncertain | uncertain among CBD | flip "
             "| grey split |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def largest_split(grey):
        splits = {k: v for k, v in grey.splits().items()
                  if v["minor_share"] >= GREY_SPLIT_MIN_SHARE and v["share"] >= 0.01}
        name = max(splits, key=lambda k: splits[k]["separation"])
        return f"{splits[name]['separation']:.1f} ({name})"

    stacks = [(domain, st) for domain in DOMAINS
              for st in domain_stacks(domain, pre=model_preprocess(card))]
    img = tifffile.imread(foreign.DATA / "sem_images" / "nmc_cathode_sem_682x1024.tif")
    img = np.asarray(img[..., 0] if img.ndim == 3 else img, np.float32)
    stacks.append(("real SEM", {"name": "nmc_cathode_sem_682x1024", "labels": None, "images":
                                np.repeat(preprocess_stack(img[None, None], model_preprocess(card)),
                                          2, axis=1)}))
    for domain, st in stacks:
        cm = torch.zeros(3, 3, dtype=torch.long)
        unsure = unsure_cbd = n_cbd = flips = total = 0
        grey = PhaseGreyHistograms()
        for z in range(0, len(st["images"]), 8):
            image = context_image(st["images"], z, channels, card["context"])
            prob = calibrate(predict_probabilities(model, image, multiple=net.multiple,
                                                   tile=1024, device="cpu"), temperature)
            mirrored = predict_probabilities(model, np.ascontiguousarray(image[..., ::-1]),
                                             multiple=net.multiple, tile=1024,
                                             device="cpu")[..., ::-1]
            lab = prob.argmax(0)
            low = prob.max(0) < UNCERTAIN_BELOW
            unsure += int(low.sum())
            unsure_cbd += int(low[lab == 2].sum())
            n_cbd += int((lab == 2).sum())
            flips += int((mirrored.argmax(0) != lab).sum())
            total += lab.size
            grey.add(image[centre].mean(axis=0), lab)
            if st["labels"] is not None:
                cm += confusion(torch.from_numpy(lab), torch.from_numpy(
                    st["labels"][z].astype(np.int64)))
        if st["labels"] is None:
            ious = "| - | - | - |"
        else:
            iou = iou_from_confusion(cm)
            ious = f"| {iou['iou_pore']:.3f} | {iou['iou_am']:.3f} | {iou['iou_cbd']:.3f} |"
        lines.append(f"| {domain} | {st['name']} {ious} {unsure / total:.3f} | "
                     f"{unsure_cbd / max(n_cbd, 1):.3f} | {flips / total:.3f} | "
                     f"{largest_split(grey)} |")
        print(lines[-1], flush=True)
    if args.write:
        write_section("Segmentation across domains: label-free signals", "\n".join(lines))
    print("\n".join(lines))


# ----------------------------------------------------------------------------- fallback
FALLBACK_SEEDS = {"foreign": 5151, "foreign_cbd_bright": 5252, "foreign_fine": 5353}
#: Simulator stacks finer than the demo (d50 0.6-1.5 µm at 50 nm): where the gate's signal,
#: the share of uncertain CBD, is high for the shipped model without the stack being foreign.
FINE_SIMULATOR = [(0.6, 0.30), (0.7, 0.35), (0.8, 0.30), (1.0, 0.27), (1.5, 0.35)]
FALLBACK_DOMAINS = ["simulator", "simulator_strong", "simulator_fine", "foreign",
                    "foreign_cbd_bright", "foreign_fine", "nanoct"]


def fallback_stacks(domain: str, pre: PreprocessParams = PRE):
    """Test stacks of the ``fallback`` benchmark: a new draw of each foreign domain (other
    seeds than ``evaluate``'s, four strengths), the simulator's held-out stacks, finer simulator
    stacks (:data:`FINE_SIMULATOR`), and the nano-CT slices."""
    if domain == "simulator_fine":
        from fibrecon.simulate import simulate_sample

        out = []
        for i, (d50, porosity) in enumerate(FINE_SIMULATOR):
            s = simulate_sample((40, 208, 208), kvs=tuple(KVS), porosity=porosity, d50_um=d50,
                                seed=8100 + i, artifacts={"drift": 0})
            out.append({"name": f"sim-d50-{d50:g}", "images": preprocess_stack(s.raw, pre),
                        "labels": s.labels})
        return out
    if domain in FALLBACK_SEEDS:
        return [{"name": name, "images": preprocess_stack(raw, pre), "labels": labels}
                for name, raw, labels in _foreign_raw(domain, 24, FALLBACK_SEEDS[domain],
                                                      (0.7, 1.0, 1.5, 2.0))]
    return domain_stacks(domain, pre=pre)


def cmd_fallback(args):
    """Score the segment stage's switch to the fallback model (``segment.fallback_model``):
    per stack, the shipped model's probe (:func:`fibrecon.uncertainty.probe_slices`, calibrated,
    :func:`fibrecon.uncertainty.uncertain_cbd_share`) decides, as segment decides; IoU of the
    model, the fallback and the switch, per domain and per stack."""
    from fibrecon.modelcard import ModelCard
    from fibrecon.uncertainty import calibrate, probe_slices, uncertain_cbd_share

    torch.set_num_threads(2)
    (net, card), (fnet, fcard) = load_model(args.model), load_model(args.fallback)
    if PreprocessParams.from_record(card["preprocess"]).differences(fcard["preprocess"]):
        raise SystemExit("the fallback model was trained with other preprocessing")
    model, label, flabel = prepare_for_inference(net), labeller(net, card), labeller(fnet, fcard)
    channels = [KVS.index(float(k)) for k in card["kvs"]]
    temperature = ModelCard(card).temperature
    names = {"model": Path(args.model).name, "fallback": Path(args.fallback).name}
    domains = FALLBACK_DOMAINS
    results = {"models": names, "above": args.above, "domains": {}, "stacks": []}
    for domain in domains:
        cms = {k: torch.zeros(3, 3, dtype=torch.long) for k in ("model", "fallback", "switch")}
        switched = 0
        stacks = fallback_stacks(domain, model_preprocess(card))
        for st in stacks:
            images = st["images"]
            share = uncertain_cbd_share(
                calibrate(predict_probabilities(model, context_image(images, z, channels,
                                                                     card["context"]),
                                                multiple=net.multiple, tile=1024, device="cpu"),
                          temperature) for z in probe_slices(len(images)))
            use = share > args.above
            switched += use
            per = {k: torch.zeros(3, 3, dtype=torch.long) for k in ("model", "fallback")}
            for z in range(len(st["labels"])):
                truth = torch.from_numpy(st["labels"][z].astype(np.int64))
                per["model"] += confusion(torch.from_numpy(label(images, z)), truth)
                per["fallback"] += confusion(torch.from_numpy(flabel(images, z)), truth)
            for k in ("model", "fallback"):
                cms[k] += per[k]
            cms["switch"] += per["fallback" if use else "model"]
            row = {"domain": domain, "stack": st["name"], "probe": round(share, 3),
                   "switched": bool(use),
                   **{k: {p: round(v, 3) for p, v in iou_from_confusion(per[k]).items()}
                      for k in per}}
            results["stacks"].append(row)
            print(json.dumps(row), flush=True)
        results["domains"][domain] = {"stacks": len(stacks), "switched": int(switched),
                                      **{k: iou_from_confusion(cm) for k, cm in cms.items()}}
    files.write_json(ROOT / "benchmarks" / "cross_domain_fallback.json", results)
    text = fallback_report(results)
    if args.write:
        write_section("Segmentation across domains: the switch to the fallback model", text)
    print(text)


def fallback_report(results: dict) -> str:
    names = results["models"]
    lines = [f"The segment stage's switch (`segment.fallback_model: auto`): the model "
             f"`{names['model']}` labels a probe of slices (every 8th, at most 32); where more "
             f"than {results['above']:.0%} of the voxels it predicts CBD are uncertain "
             f"(calibrated top probability below 0.8), the fallback `{names['fallback']}` "
             "segments the stack. Test stacks: a new draw of the foreign domains (seeds "
             f"{FALLBACK_SEEDS}, strengths 0.7 / 1 / 1.5 / 2; `evaluate` drew others, and the "
             "threshold, the CBD warning's, was set on those), the simulator's held-out stacks, "
             "simulator stacks finer than the demo (d50 / porosity "
             + ", ".join(f"{d:g} µm / {p:g}" for d, p in FINE_SIMULATOR)
             + ", 40 x 208², no drift) and the nano-CT slices. Command: `.venv/bin/python "
             "benchmarks/cross_domain.py fallback --write`.", "",
             "| domain | stacks switched | model pore / AM / CBD | fallback | with the switch |",
             "| --- | --- | --- | --- | --- |"]

    def cell(c):
        return f"{c['iou_pore']:.3f} / {c['iou_am']:.3f} / {c['iou_cbd']:.3f}"
    for domain, d in results["domains"].items():
        lines.append(f"| {domain} | {d['switched']} of {d['stacks']} | {cell(d['model'])} | "
                     f"{cell(d['fallback'])} | {cell(d['switch'])} |")
    abc = [d for k, d in results["domains"].items() if k != "nanoct"]
    for k in ("model", "fallback", "switch"):
        worst = {p: min(d[k][p] for d in abc) for p in TARGETS}
        lines.append(f"| **worst of {len(abc)} (a-c)**, {k} | | {cell(worst)} | | |")
    lines += ["", "Per stack (probe: the model's share of uncertain voxels among those it "
              "predicts CBD):", "", "| domain | stack | probe | switched | model | fallback |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in results["stacks"]:
        lines.append(f"| {r['domain']} | {r['stack']} | {r['probe']:.3f} | "
                     f"{'yes' if r['switched'] else 'no'} | {cell(r['model'])} | "
                     f"{cell(r['fallback'])} |")
    return "\n".join(lines) + "\n"


def cmd_agreement(args):
    """Do the model and the fallback agree on a stack's CBD where the model is right? Per test
    stack of ``fallback``: the CBD IoU between the two networks' labels of the probe slices
    (as segment computes it, :func:`fibrecon.uncertainty.cbd_agreement`) beside each network's
    CBD IoU against the truth on the same slices."""
    from fibrecon.uncertainty import AGREEMENT_CBD_WARN_BELOW, cbd_agreement, probe_slices

    torch.set_num_threads(2)
    (net, card), (fnet, fcard) = load_model(args.model), load_model(args.fallback)
    label, flabel = labeller(net, card), labeller(fnet, fcard)
    rows = []
    for domain in FALLBACK_DOMAINS:
        for st in fallback_stacks(domain, model_preprocess(card)):
            zs = probe_slices(len(st["labels"]))
            a = np.stack([label(st["images"], z) for z in zs])
            b = np.stack([flabel(st["images"], z) for z in zs])
            truth = st["labels"][zs]
            row = {"domain": domain, "stack": st["name"],
                   "model_cbd": round(cbd_agreement(a, truth), 3),
                   "fallback_cbd": round(cbd_agreement(b, truth), 3),
                   "agreement_cbd": round(cbd_agreement(a, b), 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    below = [r for r in rows if r["agreement_cbd"] < AGREEMENT_CBD_WARN_BELOW]
    missed = [r for r in rows if r not in below and r["model_cbd"] < 0.5]
    lines = [f"The CBD IoU between the labels of `{Path(args.model).name}` and "
             f"`{Path(args.fallback).name}` on each stack's probe slices (every 8th, as segment "
             "takes them), beside each network's CBD IoU against the truth on the same slices; "
             f"segment warns below {AGREEMENT_CBD_WARN_BELOW}. Stacks: those of `fallback`. "
             "Command: `.venv/bin/python benchmarks/cross_domain.py agreement --write` "
             "(3 min).", "",
             f"Below {AGREEMENT_CBD_WARN_BELOW}: {len(below)} of {len(rows)} stacks, the model's "
             f"CBD IoU there at most {max(r['model_cbd'] for r in below):.3f}. At or above: "
             f"{len(rows) - len(below)} stacks, the model's CBD IoU under 0.5 on "
             + (", ".join(f"{r['stack']} ({r['model_cbd']:.3f}, agreement "
                          f"{r['agreement_cbd']:.3f})" for r in missed) or "none")
             + " (missed).", "",
             "| domain | stacks | below | model CBD IoU | agreement |", "| --- | --- | --- | --- | --- |"]
    for domain in FALLBACK_DOMAINS:
        rs = [r for r in rows if r["domain"] == domain]
        lines.append(f"| {domain} | {len(rs)} | {sum(r in below for r in rs)} | "
                     f"{min(r['model_cbd'] for r in rs):.3f}-{max(r['model_cbd'] for r in rs):.3f}"
                     f" | {min(r['agreement_cbd'] for r in rs):.3f}-"
                     f"{max(r['agreement_cbd'] for r in rs):.3f} |")
    lines += ["", "| domain | stack | model CBD IoU | fallback CBD IoU | agreement |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['domain']} | {r['stack']} | {r['model_cbd']:.3f} | {r['fallback_cbd']:.3f} | "
              f"{r['agreement_cbd']:.3f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    if args.write:
        write_section("Segmentation across domains: two networks' agreement", text)
    print(text)


# ----------------------------------------------------------------------------- training
def cmd_train(args):
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    latest = out / "latest.pt"
    start = load_model(latest) if latest.exists() else load_model(args.init)
    # a checkpoint of these rounds (OUT/latest.pt, or the committed one given as --init) resumes
    resumed = "rounds_done" in start[1]
    done = int(start[1]["rounds_done"]) if resumed else 0
    init_card = start[1]["init"] if resumed else start[1]
    # the channels and the preprocessing of the model the rounds start from (1 + 3 kV with
    # none for the shipped default, 1 kV with its Gaussian for unet_1kV.pt)
    kvs = [float(k) for k in init_card["kvs"]]
    pre = PreprocessParams.from_record(init_card["preprocess"])
    base = TrainSettings(kvs=kvs, context=init_card["context"], stacks=args.sim_stacks, randomised_stacks=args.rand_stacks,
                         label_volumes=tuple(str(foreign.DATA / "nmc_label_volumes" / v)
                                             for v in TRAIN_VOLUMES),
                         steps=args.steps, learning_rate=args.learning_rate, seed=args.seed,
                         batch_size=args.batch, workers=1)
    t0 = time.perf_counter()
    data = synthetic_stacks(base.stacks, base.stack_shape, base.voxel_size_um, kvs, pre, base.seed)
    if not (args.fresh and done):  # with --fresh, a resumed run draws its own below
        data += randomised_stacks(base.randomised_stacks, base.stack_shape, kvs, pre, base.seed,
                                  base.label_volumes, base.randomised_pixel_um)
    print(f"{time.perf_counter() - t0:.0f} s: {len(data)} stacks", flush=True)
    net = start[0]
    if args.width and resumed and args.width != net.hparams["width"]:
        source = latest if latest.exists() else args.init
        raise SystemExit(f"--width {args.width}: the checkpoint resumed ({source}) has width "
                         f"{net.hparams['width']}; a run is widened only at its start (another "
                         "--out, or leave --width out)")
    if args.width and not resumed:  # more capacity, the same logits at the start
        net = widen(net, args.width)
        print(f"widened from width {start[0].hparams['width']} to {args.width}", flush=True)
    for r in range(done, args.rounds):
        # new patches each round; the stacks were made above (randomised ones included), or
        # with --fresh the randomised stacks are drawn anew each round (the simulator's kept)
        if args.fresh and r > 0:
            data = data[:base.stacks] + randomised_stacks(
                base.randomised_stacks, base.stack_shape, kvs, pre, base.seed + 1000 * (r + 1),
                base.label_volumes, base.randomised_pixel_um)
        s = replace(base, seed=base.seed + 100 * r, randomised_stacks=0)
        net, card = train_model(s, pre, init=(net, init_card), simulated=(data, kvs),
                                progress_bar=False)
        card["init"] = init_card  # one level: the model the rounds started from
        card["rounds_done"] = r + 1
        card["settings"]["randomised_stacks"] = base.randomised_stacks
        card["name"] = init_card.get("name", Path(args.init).stem)
        card["training_data"]["randomised"] = {
            **randomised_record(base, data[base.stacks:], base.stacks),
            "rounds": r + 1, "steps_per_round": base.steps}
        save_model(out / "latest.tmp.pt", net, card)
        shutil.move(out / "latest.tmp.pt", latest)
        print(f"{time.perf_counter() - t0:.0f} s: round {r + 1} of {args.rounds}, validation "
              f"{card['validation']['simulated']}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", default=str(ROOT / ".bench" / "transfer"))
    t.add_argument("--init", default=str(SHIPPED))
    t.add_argument("--rounds", type=int, default=6)
    t.add_argument("--steps", type=int, default=800, help="optimiser steps per round")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--sim-stacks", type=int, default=40)
    t.add_argument("--rand-stacks", type=int, default=100)
    t.add_argument("--learning-rate", type=float, default=5e-4)
    t.add_argument("--seed", type=int, default=11)
    t.add_argument("--width", type=int, default=None,
                   help="widen the --init model to this many features first (fibrecon.unet.widen:"
                        " same logits, more channels to train)")
    t.add_argument("--fresh", action="store_true",
                   help="draw new randomised stacks every round instead of reusing one set")
    e = sub.add_parser("evaluate")
    e.add_argument("models", nargs="+")
    e.add_argument("--domains", nargs="+", default=DOMAINS, choices=DOMAINS)
    e.add_argument("--json", default=str(ROOT / "benchmarks" / "cross_domain.json"))
    e.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    e.add_argument("--sem", action="store_true", help="also the real SEM image (fractions)")
    e.add_argument("--figure", default=None, help="PNG of the real SEM image and each labelling")
    g = sub.add_parser("signals", help="per stack: IoU beside label-free signals (uncertain "
                                        "share, flip disagreement)")
    g.add_argument("model", nargs="?", default=str(SHIPPED))
    g.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    f = sub.add_parser("fallback", help="the segment stage's switch to the fallback model, "
                                         "scored on new draws of the test domains")
    f.add_argument("--model", default=str(SHIPPED))
    f.add_argument("--fallback", default=str(SHIPPED.with_name(SHIPPED.stem + "_randomised.pt")))
    f.add_argument("--above", type=float, default=SegmentSettings().fallback_above,
                   help="the probe's uncertain CBD share above which the fallback segments")
    f.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    a = sub.add_parser("agreement", help="per stack: the CBD IoU between the model's and the "
                                          "fallback's labels beside each one's against the truth")
    a.add_argument("--model", default=str(SHIPPED))
    a.add_argument("--fallback", default=str(SHIPPED.with_name(SHIPPED.stem + "_randomised.pt")))
    a.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    args = ap.parse_args(argv)
    {"train": cmd_train, "evaluate": cmd_evaluate, "signals": cmd_signals,
     "fallback": cmd_fallback, "agreement": cmd_agreement}[args.cmd](args)


if __name__ == "__main__":
    main()
