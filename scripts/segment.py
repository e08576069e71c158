"""Segment a preprocessed stack into pore / AM / CBD, one slice at a time."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fibrecon import files  # noqa: E402
from fibrecon.preprocess import PreprocessParams  # noqa: E402
from fibrecon.runlog import progress, rule_log  # noqa: E402
from fibrecon.samples import kv_stand_in_note  # noqa: E402
from fibrecon.modelcard import ModelCard  # noqa: E402
from fibrecon.segment import (PhaseGreyHistograms, SegmentSettings,  # noqa: E402
                              combine_channels, grey_population_warnings, label_slice,
                              multiotsu_thresholds, sample_voxels)
from fibrecon.uncertainty import (AGREEMENT_CBD_WARN_BELOW, UNCERTAIN_BELOW,  # noqa: E402
                                  agreement_warning, calibrate, cbd_agreement, phase_fractions,
                                  probe_slices,
                                  slice_uncertainty, uncertain_cbd_share, uncertain_fractions,
                                  uncertainty_warnings)

p = snakemake.params  # noqa: F821
settings = SegmentSettings.from_config(p.settings)
out = snakemake.output  # noqa: F821


def load_checked(path, device, log):
    """A network and its card, checked against the sample's channels and tile."""
    from fibrecon.unet import load_model

    net, card = load_model(path, device)
    model_card = ModelCard(card)
    data_kvs = [float(p.kvs[c]) for c in p.channels]
    model_card.check(data_kvs, settings.tile_px, path, stand_in=settings.model == "auto")
    stand_in = kv_stand_in_note(data_kvs, card["kvs"], path)
    if stand_in:
        log.warning("%s", stand_in)
    return net, card, model_card


def scale_for(model_card, path, stack, log):
    """The slices' enlargement to the model's working pixel size (None: as they are), logged."""
    coarser = model_card.working_scale(stack.voxel_size[1:])
    scale = coarser if settings.resample == "auto" else None
    note = model_card.pixel_size_note(stack.voxel_size[1:], path)
    if scale:
        log.info("pixel size %s µm is coarser than the model's trained range %s µm: each slice "
                 "is enlarged by %s to its working pixel size %.4g µm and the probabilities "
                 "taken back to the data's grid", stack.voxel_size[1:],
                 model_card.pixel_size_range_um, tuple(round(v, 3) for v in scale),
                 model_card.working_pixel_um)
    elif note and coarser is None:
        log.info("%s (finer than trained: segmented as it is, which measured as accurate as at "
                 "the trained size down to 20 nm)", note)
    elif note:
        log.warning("%s", note)
    return scale


def network_labels(stack, log):
    """Labels (and, when asked, float16 probabilities kept in a memory map) per slice."""
    import torch

    from fibrecon.infer import (context_image, context_images, predict_probabilities_resampled,
                                prepare_for_inference, resolve_device)

    torch.set_num_threads(snakemake.threads)  # noqa: F821
    device = resolve_device(settings.device)
    path = snakemake.input.model  # noqa: F821
    net, card, model_card = load_checked(path, device, log)
    scale = scale_for(model_card, path, stack, log)

    def predict(model, multiple, scale, image):
        return predict_probabilities_resampled(
            model, image, scale=scale or (1.0, 1.0), multiple=multiple,
            tile=settings.tile_px, overlap=settings.overlap_px, batch_size=settings.batch_size,
            device=device, flips=settings.flip_average)

    multiple, model = net.multiple, prepare_for_inference(net, device)
    probe = None
    fallback = snakemake.input.get("fallback")  # noqa: F821
    if fallback:  # a few slices first: is the stack like the model's training data?
        zs = probe_slices(len(stack))
        probe_probs = [calibrate(predict(model, multiple, scale,
                                         context_image(stack, z, p.channels, card["context"])),
                                 model_card.temperature) for z in zs]
        share = uncertain_cbd_share(probe_probs)
        fnet, fcard, fmodel_card = load_checked(fallback, device, log)
        fscale = scale_for(fmodel_card, fallback, stack, log)
        fmodel = prepare_for_inference(fnet, device)
        model_labels = np.stack([prob.argmax(0) for prob in probe_probs])
        fallback_labels = np.stack([
            predict(fmodel, fnet.multiple, fscale,
                    context_image(stack, z, p.channels, fcard["context"])).argmax(0)
            for z in zs])
        # two networks trained apart: do they see the same CBD?
        agreement = cbd_agreement(model_labels, fallback_labels)
        probe = {"slices": zs, "uncertain_fraction_cbd": round(share, 4),
                 "above": settings.fallback_above, "model": str(path),
                 "fallback": str(fallback), "switched": bool(share > settings.fallback_above),
                 "agreement_cbd_iou": round(agreement, 4),
                 # each network's pore / AM / CBD fractions there: the metrics stage's
                 # segmentation sd spans both readings
                 "fractions_model": [round(float(v), 4) for v in phase_fractions(model_labels)],
                 "fractions_fallback": [round(float(v), 4)
                                        for v in phase_fractions(fallback_labels)]}
        log.info("probe: the model and the fallback label its CBD with an IoU of %.3f between "
                 "them (warning below %.2f)", agreement, AGREEMENT_CBD_WARN_BELOW)
        disagree = agreement_warning(agreement, path, fallback, len(zs))
        if disagree:
            log.warning("%s", disagree)
        log.info("probe of %d slices with %s: %.1f %% of the voxels predicted CBD uncertain "
                 "(the fallback model segments above %.0f %%)", len(zs), path, 100 * share,
                 100 * settings.fallback_above)
        if probe["switched"]:
            log.warning("%.1f %% of the voxels %s predicts CBD are uncertain in a probe of %d "
                        "slices (above %.0f %%: the stack looks unlike its training data): the "
                        "fallback model %s segments this sample instead (on foreign renders it "
                        "raised the CBD IoU from 0.11-0.26 to 0.31-0.48; on simulator stacks "
                        "with particles finer than the training data it lowered it from 0.51 "
                        "to 0.37: benchmarks/RESULTS.md, \"the switch to the fallback model\"; "
                        "segment.fallback_model: none keeps the model); the record names the "
                        "network used (segmentation_model)",
                        100 * share, path, len(zs), 100 * settings.fallback_above, fallback)
            path, net, card, model_card, scale = fallback, fnet, fcard, fmodel_card, fscale
            multiple, model = fnet.multiple, fmodel
    sha256 = files.file_sha256(path)
    if out.get("model_used"):
        files.write_json(out.model_used, {"path": str(path), "sha256": sha256, "card": card,
                                          "probe": probe})
    log.info("model %s (sha256 %s), kV %s, context %d, on %s, flip average %s",
             path, sha256, card["kvs"], card["context"], device, settings.flip_average)
    differ = PreprocessParams.from_config(p.preprocess).differences(card.get("preprocess", {}))
    if differ:
        log.warning("preprocessing differs from the model's training (trained, used): %s; "
                    "expect lower accuracy, or retrain (rule train_model)", differ)
    temperature = model_card.temperature
    log.info("probabilities calibrated with the model's temperature %.3f%s", temperature,
             "" if "calibration" in card else " (model not calibrated)")
    probs, rows = None, []
    if out.get("probabilities"):
        nz, _, ny, nx = stack.shape
        probs = np.lib.format.open_memmap(f"{out.probabilities}.npy.part", "w+", np.float16,
                                          (nz, 3, ny, nx))
    inputs = context_images(stack, p.channels, card["context"])
    grey = PhaseGreyHistograms()  # a label-free check: one grey population per phase?
    centre = range(card["context"] * len(p.channels), (card["context"] + 1) * len(p.channels))
    for z, image in enumerate(progress("segmenting")(inputs, total=len(stack))):
        prob = predict(model, multiple, scale, image)
        prob = calibrate(prob, temperature)
        if out.get("uncertainty"):
            rows.append({"z": z, **slice_uncertainty(prob)})
        if probs is not None:
            probs[z] = prob
        labels = prob.argmax(0).astype(np.uint8)
        grey.add(combine_channels(image, centre), labels)  # this slice's kV channels
        yield labels
    splits = grey.splits()
    log.info("grey populations per predicted phase (separation in pooled sd, share of the "
             "smaller): %s", {k: (round(v["separation"], 2), round(v["minor_share"], 3))
                              for k, v in splits.items()})
    for message in grey_population_warnings(splits):
        log.warning("%s", message)
    if out.get("uncertainty"):
        table = pd.DataFrame(rows)
        files.write_table(out.uncertainty, table)
        shares = uncertain_fractions(table)
        log.info("uncertain voxels (calibrated top probability < %.2f): %s", UNCERTAIN_BELOW,
                 {k: round(v, 4) for k, v in shares.items()})
        for message in uncertainty_warnings(shares):
            log.warning("%s", message)
    if probs is not None:
        probs.flush()
        files.write_volume_slices(out.probabilities, iter(probs), probs.shape, np.float16,
                               stack.voxel_size, channels=True)
        del probs


def classical_labels(stack, log):
    thresholds = multiotsu_thresholds(sample_voxels(stack, p.channels), nbins=settings.nbins)
    log.info("multi-Otsu on channels %s: thresholds %s, classes dark to bright %s", p.channels,
             thresholds, list(settings.grey_order))
    for z in progress("labelling")(range(len(stack))):
        yield label_slice(combine_channels(stack[z], p.channels), thresholds,
                          settings.grey_order)


with rule_log(snakemake.log[0]) as log, files.VolumeReader(snakemake.input.stack) as stack:  # noqa: F821
    labels = (network_labels if settings.method == "unet" else classical_labels)(stack, log)
    nz, _, ny, nx = stack.shape
    try:
        files.write_volume_slices(out.labels, labels, (nz, ny, nx), np.uint8, stack.voxel_size)
    finally:
        if out.get("probabilities"):
            Path(f"{out.probabilities}.npy.part").unlink(missing_ok=True)
