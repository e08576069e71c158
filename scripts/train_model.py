"""Train the segmentation U-Net on simulated stacks and/or fine-tune it on annotations."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

from pathlib import Path  # noqa: E402

from fibrecon import files  # noqa: E402
from fibrecon.preprocess import PreprocessParams  # noqa: E402
from fibrecon.runlog import progress, rule_log  # noqa: E402
from fibrecon.training import (TrainSettings, annotated_stacks, finetune_warnings,  # noqa: E402
                               grey_level_warnings, train_model)
from fibrecon.unet import load_model, save_model  # noqa: E402

p = snakemake.params  # noqa: F821
inp = snakemake.input  # noqa: F821
settings = TrainSettings.from_config({**p.settings, "workers": snakemake.threads})  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    user, annotations = [], []
    for sample, path in zip(p.samples, inp.stacks):
        kvs = [float(k) for k in p.sample_kvs[sample]]
        missing = [k for k in settings.kvs if float(k) not in kvs]
        if missing:
            raise ValueError(f"sample {sample!r}: annotated, but kV {missing} of the model "
                             f"(train: kvs) were not acquired (its kvs: {kvs})")
        with files.VolumeReader(path) as stack:
            found = files.find_annotations(settings.annotations, {sample},
                                           {sample: (len(stack), *stack.shape[-2:])})
            found = [a for a in found if a.sample == sample]
            user += annotated_stacks(stack, found, [kvs.index(float(k)) for k in settings.kvs],
                                     settings.context)
        annotations += found
        log.info("%s: %d annotated slice(s) %s, %s pixels per phase", sample, len(found),
                 [a.z for a in found], [a.counts() for a in found])
    init = None
    if inp.get("init_model"):
        init = load_model(inp.init_model)
        log.info("starting from %s", inp.init_model)
    log.info("training settings: %s", settings)
    for message in grey_level_warnings(user, [f"{a.sample} slice {a.z}" for a in annotations],
                                       settings.finetune_grey_jitter):
        log.warning("%s", message)
    net, card = train_model(settings, PreprocessParams.from_config(p.preprocess),
                            user_stacks=user, init=init, device=settings.device,
                            log_dir=Path(snakemake.log[0]).parent / "train_model_metrics",  # noqa: F821
                            progress=progress("simulating"))
    card["annotations"] = [a.describe() for a in annotations]
    card["init_model"] = inp.get("init_model") or None
    log.info("validation IoU: %s", card["validation"])
    if "annotations_before" in card["validation"]:
        log.info("held-out annotated pixels: IoU before fine-tuning %s, after %s",
                 card["validation"]["annotations_before"], card["validation"]["annotations"])
        for message in finetune_warnings(card["validation"]["annotations_before"],
                                         card["validation"]["annotations"]):
            log.warning("%s", message)
    save_model(snakemake.output.model, net, card)  # noqa: F821
