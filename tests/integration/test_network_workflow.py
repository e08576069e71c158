"""The network in the workflow: train_model feeding segment, probabilities, model checks."""

import numpy as np
import pytest
from helpers import assert_stops_before_any_job, snakemake, write_setup

from fibrecon import files as fio

pytestmark = pytest.mark.slow


def tiny_training(config):
    config["segment"].update(model="results/models/unet.pt", save_probabilities=True)
    config["train"].update(stacks=3, stack_shape=[4, 64, 64], steps=8, batch_size=2,
                           patch_px=64, width=4, depth=2, device="cpu")


def test_train_model_rule_feeds_segment_and_probabilities_sum_to_one(tmp_path):
    write_setup(tmp_path, config_edit=tiny_training)
    snakemake(tmp_path, "--cores", "2", "results/segmented/tiny_a.tif")
    from fibrecon.modelcard import ModelCard

    card = ModelCard.read(tmp_path / "results" / "models" / "unet.pt").data
    assert card["kvs"] == [1.0, 3.0] and card["context"] == 1
    assert card["training_data"]["simulated"]["stacks"] == 2  # one of 3 held out
    assert set(card["validation"]["simulated"]) == {"iou_pore", "iou_am", "iou_cbd"}
    labels, voxel = fio.read_volume(tmp_path / "results" / "segmented" / "tiny_a.tif")
    probs, pvoxel = fio.read_volume(tmp_path / "results" / "segmented" /
                                    "tiny_a_probabilities.tif")
    assert probs.dtype == np.float16 and probs.shape == (labels.shape[0], 3, *labels.shape[1:])
    np.testing.assert_allclose(probs.astype(np.float32).sum(1), 1.0, atol=5e-3)
    agree = (probs.argmax(1) == labels).mean()
    assert agree > 0.99  # float16 rounding may flip near-ties
    assert pvoxel == voxel
    log = (tmp_path / "logs" / "segment" / "tiny_a.log").read_text()
    assert "results/models/unet.pt (sha256" in log and "segmenting" in log
    assert not list((tmp_path / "results").rglob("*.part"))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["segment"].update(channels=[3], model="resources/models/unet_1kV_3kV.pt"),
     "the model expects kV channels [1.0, 3.0] (in this order), but the configured channels "
     "are [3.0]"),
    (lambda c: c["segment"].update(channels=[3, 1]),  # model: auto, channels not rising
     "segment: model: auto: no shipped model takes the kV channels [3.0, 1.0] of sample "
     "'tiny_a'"),
    (lambda c: c["segment"].update(tile_px=128), "tile_px = 128 is smaller than the receptive"),
    (lambda c: c["segment"].update(model="nowhere/model.pt"),
     "segment: model: nowhere/model.pt: model file not found"),
    (lambda c: c["segment"].update(model="results/models/unet.pt", channels=[3]),
     "differ from the kV list the model is trained for"),
])
def test_model_that_does_not_fit_the_config_stops_before_any_job(tmp_path, edit, message):
    assert_stops_before_any_job(tmp_path, edit, message)


def test_annotation_round_trip_suggest_correct_finetune_segment(tmp_path):
    """annotate -> a user's corrections (strokes, 255 elsewhere) -> fine-tune -> segment."""
    import shutil

    import tifffile
    import yaml

    from fibrecon import NOT_ANNOTATED
    from fibrecon.modelcard import ModelCard

    write_setup(tmp_path, config_edit=lambda c: c["annotate"].update(slices=2, spacing=3))
    snakemake(tmp_path, "--cores", "2", "results/annotate/tiny_a")
    folder = tmp_path / "results" / "annotate" / "tiny_a"
    table = fio.read_table(folder / "suggestions.tsv")
    chosen = table.loc[table["suggested"], "z"].tolist()
    assert len(chosen) == 2 and abs(chosen[0] - chosen[1]) >= 3
    assert chosen[0] == table["z"].iloc[0]  # the most uncertain slice is suggested first
    for name in ("README.txt", "overview.png"):
        assert (folder / name).stat().st_size > 0
    pre, _ = fio.read_volume(tmp_path / "results" / "preprocessed" / "tiny_a.tif")
    for z in chosen:
        image = tifffile.imread(folder / f"slice_{z:04d}.tif")
        np.testing.assert_array_equal(image, pre[z])
    # the user corrects a few strokes of the suggested slices and leaves the rest unsaid
    (tmp_path / "annotations" / "tiny_a").mkdir(parents=True)
    truth, _ = fio.read_volume(tmp_path / "results" / "segmented" / "tiny_a.tif")
    for z in chosen:
        start = tifffile.imread(folder / f"slice_{z:04d}_labels.tif")
        assert start.shape == pre.shape[-2:] and np.array_equal(start, truth[z])
        edited = np.full(start.shape, NOT_ANNOTATED, np.uint8)
        edited[::4] = start[::4]
        tifffile.imwrite(tmp_path / "annotations" / "tiny_a" / f"slice_{z:04d}_labels.tif",
                         edited)
    finetune = yaml.safe_load((fio_repo() / "config" / "finetune.yaml").read_text())
    finetune["train"].update(finetune_steps=6, batch_size=2, patch_px=32, device="cpu")
    (tmp_path / "config" / "finetune.yaml").write_text(yaml.safe_dump(finetune))
    configs = [str(tmp_path / "config" / n) for n in ("config.yaml", "finetune.yaml")]
    snakemake(tmp_path, "results/segmented/tiny_a.tif", "--cores", "2", "--configfile", *configs)
    card = ModelCard.read(tmp_path / "results" / "models" / "unet.pt").data
    assert [a["slice"] for a in card["annotations"]] == sorted(chosen)
    assert card["annotations"][0]["sha256"] == fio.file_sha256(
        tmp_path / "annotations" / "tiny_a" / f"slice_{min(chosen):04d}_labels.tif")
    assert set(card["validation"]["annotations"]) == {"iou_pore", "iou_am", "iou_cbd"}
    assert "annotations_before" in card["validation"] and card["init"]["kvs"] == [1.0, 3.0]
    log = (tmp_path / "logs" / "segment" / "tiny_a.log").read_text()
    assert "results/models/unet.pt (sha256" in log
    shutil.rmtree(tmp_path / "annotations" / "tiny_a")
    (tmp_path / "annotations" / "nobody").mkdir()
    result = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", *configs, check=False)
    assert result.returncode != 0 and "no sample 'nobody' in the sample sheet" in \
        result.stdout + result.stderr


def fio_repo():
    from helpers import REPO

    return REPO
