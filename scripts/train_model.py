"""Train the segmentation U-Net on simulated stacks (+ optional user-labelled slices)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

from pathlib import Path  # noqa: E402

from fibrecon import files  # noqa: E402
from fibrecon.preprocess import PreprocessParams  # noqa: E402
from fibrecon.runlog import progress, rule_log  # noqa: E402
from fibrecon.training import TrainSettings, train_model  # noqa: E402
from fibrecon.unet import input_channels, load_model, save_model  # noqa: E402

p = snakemake.params  # noqa: F821
settings = TrainSettings.from_config({**p.settings, "workers": snakemake.threads})  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    user = []
    if snakemake.input.user_slices:  # noqa: F821
        user = files.read_labelled_slices(snakemake.input.user_slices,  # noqa: F821
                                       input_channels(settings.kvs, settings.context))
        log.info("%d user-labelled slices from %s", len(user), snakemake.input.user_slices)  # noqa: F821
    init = None
    if snakemake.input.init_model:  # noqa: F821
        init = load_model(snakemake.input.init_model)  # noqa: F821
        log.info("starting from %s", snakemake.input.init_model)  # noqa: F821
    log.info("training settings: %s", settings)
    net, card = train_model(settings, PreprocessParams.from_config(p.preprocess),
                            user_stacks=user, init=init, device=settings.device,
                            log_dir=Path(snakemake.log[0]).parent / "train_model_metrics",  # noqa: F821
                            progress=progress("simulating"))
    card["user_slices"] = snakemake.input.user_slices or None  # noqa: F821
    card["init_model"] = snakemake.input.init_model or None  # noqa: F821
    log.info("validation IoU: %s", card["validation"])
    save_model(snakemake.output.model, net, card)  # noqa: F821
