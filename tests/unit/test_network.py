"""The segmentation network: architecture, model files, tiled inference, training, checks."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
import tifffile
import torch

from fibrecon import NOT_ANNOTATED, files
from fibrecon.infer import context_image, predict_probabilities, prepare_for_inference, tile_starts
from fibrecon.preprocess import PreprocessParams
from fibrecon.modelcard import ModelCard, ModelCardError
from fibrecon.training import (PatchDataset, TrainSettings, confusion, iou_from_confusion,
                               train_model)
from fibrecon.unet import ModelLoadError, UNet, input_channels, load_model, save_model, widen

SHIPPED = "resources/models/unet_1kV_3kV.pt"


def test_unet_keeps_the_image_size_and_its_receptive_field_is_what_it_says():
    torch.manual_seed(0)
    net = UNet(2, width=4, depth=3).eval()
    with torch.no_grad():  # positive weights keep every ReLU open, so gradients show the reach
        for p in net.parameters():
            p.abs_()
    assert net(torch.zeros(1, 2, 48, 64)).shape == (1, 3, 48, 64)
    # a change at one pixel reaches exactly as far as the stated receptive field
    x = torch.rand(1, 2, 256, 256, requires_grad=True)
    net(x)[0, :, 128, 128].sum().backward()
    rows = np.flatnonzero(x.grad[0].abs().sum(0).sum(1).numpy())
    assert rows.max() - rows.min() + 1 <= net.receptive_field
    assert rows.max() - rows.min() + 1 >= net.receptive_field - 2 * net.multiple


def test_model_file_round_trip_and_errors_name_the_file(tmp_path):
    net = UNet(input_channels([1, 3], 1), width=4, depth=2)
    save_model(tmp_path / "m.pt", net, {"kvs": [1.0, 3.0], "context": 1,
                                        "version": torch.__version__})
    loaded, card = load_model(tmp_path / "m.pt")
    x = torch.rand(1, 6, 16, 16)
    torch.testing.assert_close(loaded(x), net.eval()(x))
    assert card["kvs"] == [1.0, 3.0]
    with pytest.raises(ModelLoadError, match="m2.pt: model file not found"):
        load_model(tmp_path / "m2.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="bad.pt: not a readable model checkpoint"):
        load_model(tmp_path / "bad.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match="other.pt: not a fibrecon model"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="lacks"):
        save_model(tmp_path / "x.pt", net, {"kvs": [1.0]})
    assert not list(tmp_path.glob("*.part"))


def test_kv_mismatch_and_small_tile_are_refused_naming_both():
    card = ModelCard({"kvs": [1.0, 3.0], "context": 1, "receptive_field_px": 200})
    card.check([1, 3], 256, "m.pt")
    with pytest.raises(ModelCardError, match=r"m.pt: the model expects kV channels \[1.0, 3.0\]"
                                             r".*configured channels are \[3.0\]"):
        card.check([3], 256, "m.pt")
    with pytest.raises(ModelCardError, match="tile_px = 64 is smaller than the receptive field"):
        card.check([1, 3], 64, "m.pt")


def test_model_card_is_stored_once_inside_the_model_file_and_read_without_torch(tmp_path):
    import subprocess
    import sys
    import zipfile

    net = UNet(input_channels([1, 3], 1), width=4, depth=2)
    save_model(tmp_path / "m.pt", net, {"kvs": [1.0, 3.0], "context": 1, "note": "x"})
    with zipfile.ZipFile(tmp_path / "m.pt") as archive:
        assert sum(n.endswith("/card.json") for n in archive.namelist()) == 1
    assert not list(tmp_path.glob("*.json"))  # no sidecar
    code = ("import sys; sys.modules['torch'] = None\n"  # importing torch would fail
            "from fibrecon.modelcard import ModelCard\n"
            f"print(ModelCard.read({str(tmp_path / 'm.pt')!r}).data['note'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "x", out.stderr
    torch.save({"weights": 1}, tmp_path / "plain.pt")
    with pytest.raises(ModelCardError, match="plain.pt: the model file holds no model card"):
        ModelCard.read(tmp_path / "plain.pt")
    with pytest.raises(ModelCardError, match="gone.pt: model file not found"):
        ModelCard.read(tmp_path / "gone.pt")


def test_tiles_cover_the_image_and_blending_matches_one_big_tile():
    assert tile_starts(1000, 512, 64) == [0, 448, 488]
    for size, tile, overlap in [(100, 32, 8), (515, 128, 32), (64, 64, 16)]:
        starts = tile_starts(size, tile, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s: s + tile] = True
        assert covered.all() and starts[-1] + tile == size
    torch.manual_seed(0)
    net = prepare_for_inference(UNet(2, width=4, depth=2))
    img = np.random.default_rng(0).random((2, 100, 130), dtype=np.float32)
    whole = predict_probabilities(net, img, multiple=4, tile=1024)
    tiled = predict_probabilities(net, img, multiple=4, tile=48, overlap=24, batch_size=3)
    assert whole.shape == tiled.shape == (3, 100, 130)
    np.testing.assert_allclose(whole.sum(0), 1.0, rtol=1e-5)
    # a depth-2 net sees 37 px; with 24 px overlap the blended tiles agree with one big tile
    assert np.mean(np.abs(whole - tiled)) < 0.02


def test_flip_average_is_the_mean_of_the_mirrored_logits_and_mirror_symmetric():
    torch.manual_seed(1)
    net = prepare_for_inference(UNet(2, width=4, depth=2))
    img = np.random.default_rng(1).random((2, 64, 80), dtype=np.float32)
    with torch.inference_mode():
        def logits(a):
            return net(torch.from_numpy(np.ascontiguousarray(a))[None])[0]
        by_hand = torch.softmax((logits(img) + logits(img[:, :, ::-1]).flip(2)) / 2, 0).numpy()
    x = predict_probabilities(net, img, multiple=4, flips="x")
    np.testing.assert_allclose(x, by_hand, atol=1e-5)
    assert np.abs(x - predict_probabilities(net, img, multiple=4)).max() > 1e-3  # it changes
    # averaged over every mirror image, the prediction of a mirrored slice is the mirrored one
    xy = predict_probabilities(net, img, multiple=4, flips="xy")
    mirrored = predict_probabilities(net, np.ascontiguousarray(img[:, ::-1]), multiple=4,
                                     flips="xy")
    np.testing.assert_allclose(mirrored[:, ::-1], xy, atol=1e-5)
    with pytest.raises(ValueError, match="flips must be one of"):
        predict_probabilities(net, img, multiple=4, flips="z")


def test_alignment_augmentation_blurs_every_slice_and_moves_only_the_neighbours():
    from fibrecon.training import _realigned

    img = np.zeros((48, 48), np.float32)
    img[20:28, 16:30] = 1.0
    x = np.stack([img, 2 * img] * 3)  # context 1, two kV channels per slice
    out = _realigned(x, 1, np.random.default_rng(4))

    def centroid(a):
        return np.array(ndi.center_of_mass(a))

    for c in (2, 3):  # the centre slice: blurred in place, the labels still fit
        assert np.abs(out[c] - x[c]).max() > 0.01
        np.testing.assert_allclose(centroid(out[c]), centroid(x[c]), atol=1e-4)
        assert out[c].sum() == pytest.approx(x[c].sum(), rel=1e-5)
    moved = [np.abs(centroid(out[c]) - centroid(x[c])).max() for c in (0, 1, 4, 5)]
    assert min(moved) > 1e-3 and max(moved) < 1.5  # a residual error of a fraction of a pixel
    np.testing.assert_allclose(out[1], 2 * out[0], rtol=1e-5, atol=1e-6)  # kV channels together


def test_context_image_orders_slices_and_repeats_at_the_ends():
    stack = np.arange(4)[:, None, None, None] * np.ones((4, 2, 3, 3)) + \
        np.array([0, 10])[None, :, None, None]
    x = context_image(stack, 0, [0, 1], 1)
    assert x[:, 0, 0].tolist() == [0, 10, 0, 10, 1, 11]
    assert context_image(stack, 3, [1], 1)[:, 0, 0].tolist() == [12, 13, 13]


def test_iou_from_confusion_and_augmented_patches_are_seeded():
    cm = confusion(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 2]))
    iou = iou_from_confusion(cm)
    assert iou == {"iou_pore": 0.5, "iou_am": 0.5, "iou_cbd": 1.0}
    stacks = [(np.random.default_rng(0).random((3, 2, 40, 40)).astype(np.float16),
               np.random.default_rng(1).integers(0, 3, (3, 40, 40)).astype(np.uint8))]
    ds = PatchDataset(stacks, 32, 1, 10, seed=5)
    a, b = ds[3], ds[3]
    assert a[0].shape == (6, 32, 32) and a[1].shape == (32, 32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="larger than training image"):
        PatchDataset(stacks, 64, 0, 1, seed=0)


def test_grey_jitter_scales_the_grey_augmentation_and_fine_tuning_uses_its_own(monkeypatch):
    flat = [(np.full((1, 1, 48, 48), 0.5, np.float32), np.ones((1, 48, 48), np.uint8))]

    def offsets(jitter):  # patch mean minus the image's 0.5, over 40 augmented patches
        ds = PatchDataset(flat, 32, 0, 40, seed=2, grey_jitter=jitter)
        return np.array([float(ds[i][0].mean()) - 0.5 for i in range(40)])

    assert np.abs(offsets(0.0)).max() < 0.005  # only the zero-mean noise is left
    assert offsets(1.0).std() > 0.03  # gain, offset and gamma move the whole patch
    assert 0.2 < offsets(0.3).std() / offsets(1.0).std() < 0.45
    with pytest.raises(ValueError, match="grey_jitter"):
        PatchDataset(flat, 32, 0, 1, seed=0, grey_jitter=-1)

    seen = []

    class Spy(PatchDataset):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("grey_jitter"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr("fibrecon.training.PatchDataset", Spy)
    s = TrainSettings(kvs=[1.0], context=0, stacks=0, finetune_steps=1, batch_size=1,
                      patch_px=32, width=4, depth=2, validation_fraction=0.0,
                      finetune_grey_jitter=0.25)
    assert TrainSettings().finetune_grey_jitter == 0.3  # the documented default
    net = UNet(1, width=4, depth=2)
    card = {"kvs": [1.0], "context": 0}
    train_model(s, PreprocessParams(denoise="none"), user_stacks=flat, init=(net, card),
                device="cpu", progress_bar=False)
    assert seen == [0.25]


def test_annotated_slices_on_other_grey_scales_are_a_warning_naming_them():
    from fibrecon.training import grey_level_warnings

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (3, 40, 40)).astype(np.uint8)
    labels[[0, 2]] = NOT_ANNOTATED  # context slices carry no labels
    grey = np.array([0.1, 0.6, 0.4])[labels[1]]

    def stack(am_shift):  # AM brighter by am_shift; pore and CBD as they were
        img = grey + np.where(labels[1] == 1, am_shift, 0.0) + rng.normal(0, 0.02, grey.shape)
        return np.repeat(img[None, None], 3, 0).astype(np.float16), labels

    names = ["A slice 4", "B slice 9"]
    (message,) = grey_level_warnings([stack(0.0), stack(0.2)], names, 0.3)
    assert "A slice 4" in message and "B slice 9" in message and "spread of 0.20" in message
    assert grey_level_warnings([stack(0.0), stack(0.2)], names, 1.0) == []  # jitter 1 covers it
    assert grey_level_warnings([stack(0.0), stack(0.01)], names, 0.3) == []
    # a slice with fewer than 100 annotated AM pixels says nothing about the grey scale
    few = stack(0.2)[0], np.where(labels == 1, 0, labels).astype(np.uint8)
    assert grey_level_warnings([stack(0.0), few], names, 0.3) == []


@pytest.mark.slow
def test_training_learns_the_simulated_phases_and_is_reproducible():
    s = TrainSettings(kvs=[1.0, 3.0], stacks=4, stack_shape=(6, 64, 64), steps=60, batch_size=4,
                      patch_px=64, width=4, depth=3, learning_rate=1e-2)
    pre = PreprocessParams(denoise="none")
    net, card = train_model(s, pre, device="cpu", progress_bar=False)
    net2, _ = train_model(s, pre, device="cpu", progress_bar=False)
    for (k, v), v2 in zip(net.state_dict().items(), net2.state_dict().values()):
        assert torch.equal(v, v2), k  # bit-identical on CPU with the same seed
    val = card["validation"]["simulated"]
    # 60 steps of a tiny net already separate the phases far better than chance (~0.33)
    assert val["iou_am"] > 0.6 and val["iou_pore"] > 0.5, val
    assert card["kvs"] == [1.0, 3.0] and card["preprocess"]["denoise"] == "none"
    assert card["training_data"]["simulated"]["stacks"] == 3


def test_shipped_model_loads_matches_its_card_and_stays_small():
    net, card = load_model(SHIPPED)
    assert card == ModelCard.read(SHIPPED).data
    assert card["kvs"] == [1.0, 3.0] and net.hparams["in_channels"] == 6
    assert card["receptive_field_px"] == net.receptive_field
    import os
    assert os.path.getsize(SHIPPED) <= 20 * 2**20


def test_streamed_context_images_equal_the_per_slice_ones():
    from fibrecon.infer import context_images

    stack = np.random.default_rng(2).random((5, 2, 4, 4)).astype(np.float32)
    for context in (0, 1, 2):
        streamed = list(context_images(stack, [1, 0], context))
        assert len(streamed) == 5
        for z, img in enumerate(streamed):
            np.testing.assert_array_equal(img, context_image(stack, z, [1, 0], context))


def test_training_continues_from_a_loaded_model_in_training_mode_and_keeps_its_card():
    s = TrainSettings(kvs=[1.0, 3.0], context=0, stacks=2, stack_shape=(3, 32, 32), steps=3,
                      batch_size=2, patch_px=32, width=4, depth=2)
    pre = PreprocessParams(denoise="none")
    first, card = train_model(s, pre, device="cpu", progress_bar=False)
    assert not first.training  # returned in eval mode, as load_model gives it
    seen = []
    first.register_forward_hook(lambda m, i, o: seen.append(m.training))
    before = {k: v.clone() for k, v in first.state_dict().items()}
    second, card2 = train_model(replace(s, seed=2), pre, init=(first, card), device="cpu",
                                progress_bar=False)
    assert second is first and seen and seen[0]  # trained in training mode (batch-norm live)
    assert any(not torch.equal(before[k], v) for k, v in second.state_dict().items())
    assert card2["init"] == card and card2["settings"]["seed"] == 2
    with pytest.raises(ValueError, match=r"initial model takes kV channels \[1.0, 3.0\] with "
                                         r"context 0; the training settings ask for \[1.0\]"):
        train_model(replace(s, kvs=[1.0]), pre, init=(first, card), device="cpu",
                    progress_bar=False)


def test_a_widened_network_gives_the_same_logits_and_trains_its_new_channels():
    net, _ = load_model(SHIPPED)
    x = torch.rand(2, net.hparams["in_channels"], 64, 64)
    wide = widen(net, net.hparams["width"] + 4)
    assert not wide.training and wide.hparams["width"] == net.hparams["width"] + 4
    with torch.no_grad():
        assert torch.allclose(wide(x), net(x), atol=1e-4)
    # the new channels are not dead: one step moves the logits and their outgoing weights
    wide.train()
    opt = torch.optim.SGD(wide.parameters(), lr=0.05)
    y = torch.randint(0, 3, (2, 64, 64))
    torch.nn.functional.cross_entropy(wide(x), y).backward()
    old = net.hparams["width"]
    assert wide.head.weight.grad[:, old:].abs().sum() > 0
    opt.step()
    wide.eval()
    with torch.no_grad():
        assert not torch.allclose(wide(x), net(x), atol=1e-4)
    with pytest.raises(ValueError, match="narrower"):
        widen(net, old - 1)


def test_resampled_prediction_is_on_the_data_grid_and_only_coarser_data_are_resampled():
    from fibrecon.infer import predict_probabilities_resampled

    torch.manual_seed(0)
    net = prepare_for_inference(UNet(2, width=4, depth=2), "cpu")
    img = np.random.default_rng(0).random((2, 40, 52), dtype=np.float32)
    same = predict_probabilities_resampled(net, img, scale=(1.0, 1.0), multiple=4)
    np.testing.assert_array_equal(same, predict_probabilities(net, img, multiple=4))
    coarse = predict_probabilities_resampled(net, img, scale=(1.6, 1.6), multiple=4)
    assert coarse.shape == (3, 40, 52)
    np.testing.assert_allclose(coarse.sum(0), 1.0, atol=1e-5)
    card = ModelCard({"kvs": [1, 3], "context": 1, "settings": {"voxel_size_um": 0.05}})
    assert card.working_scale((0.05, 0.05)) is None and card.working_scale((0.02, 0.02)) is None
    sy, sx = card.working_scale((0.08, 0.08))  # coarser: enlarged to the working size
    assert sy == pytest.approx(0.08 / card.working_pixel_um) and sy > 1
    assert "expect lower accuracy" in card.pixel_size_note((0.08, 0.08), "m.pt")
    assert "expect lower accuracy" not in card.pixel_size_note((0.02, 0.02), "m.pt")


@pytest.mark.parametrize("name", ["unet_1kV.pt", "unet_1kV_3kV.pt",
                                  "unet_1kV_3kV_randomised.pt"])
def test_every_shipped_model_is_calibrated_so_auto_gives_a_segmentation_sd(name):
    """``segment.model: auto`` picks either shipped model; without a calibration in its card
    (temperature, boundary-shift sd, widening) every ``<metric>_sd_segmentation`` would be
    NaN (benchmarks/uncertainty.py --model ... --write-card fits it)."""
    card = ModelCard.read(Path(SHIPPED).parent / name)
    cal = card.data["calibration"]
    assert 1.0 <= card.temperature < 3.0, cal  # a softmax is over-confident, not under-
    assert len(cal["boundary_shift_sd"]) == 2 and all(abs(v) > 0 for v in cal["boundary_shift_sd"])
    assert set(cal["family_scale"]) >= {"volume_fraction", "d50"}
    assert "simulator stacks" in cal["data"]
    # the baseline of the domain-shift widening (fibrecon.uncertainty.domain_widening)
    assert 0.0 < card.uncertain_share < 0.5, cal


def test_a_network_that_takes_two_phases_for_one_is_told_by_their_grey_levels(shared_data):
    """On the real SEM cross-section (CBD brighter than the AM) both shipped models label the
    bright CBD as AM with no uncertainty warning; the AM's grey values then form two
    populations and segment's label-free check says so. Stacks the models label right, from
    the project's simulator and from the separately written renderer, raise no such warning."""
    from foreign import label_volume, render

    from fibrecon.preprocess import preprocess_stack
    from fibrecon.segment import PhaseGreyHistograms, grey_population_warnings
    from fibrecon.simulate import simulate_sample

    def check(net, card, stack):
        model = prepare_for_inference(net)
        grey = PhaseGreyHistograms()
        for z in range(len(stack)):
            image = context_image(stack, z, range(len(card["kvs"])), card["context"])
            labels = predict_probabilities(model, image, multiple=net.multiple, tile=1024,
                                           device="cpu").argmax(0)
            grey.add(stack[z].mean(axis=0), labels)
        return grey.splits(), grey_population_warnings(grey.splits())

    sem = tifffile.imread(shared_data / "sem_images" / "nmc_cathode_sem_682x1024.tif")
    sem = np.asarray(sem[..., 0] if sem.ndim == 3 else sem, np.float32)[None, None]
    for name in ("unet_1kV.pt", "unet_1kV_3kV.pt"):
        net, card = load_model(Path(SHIPPED).parent / name)
        pre = PreprocessParams.from_record(card["preprocess"])
        stack = np.repeat(preprocess_stack(sem, pre), len(card["kvs"]), axis=1)
        splits, warnings = check(net, card, stack)
        assert splits["am"]["separation"] > 4.5 and splits["am"]["share"] > 0.6, (name, splits)
        (message,) = warnings
        assert message.startswith("the voxels labelled am") and "two grey populations" in message
    # the 1 + 3 kV model (last loaded) on stacks it labels right
    kvs = tuple(card["kvs"])
    raws = [simulate_sample((6, 192, 192), kvs=kvs, porosity=0.35, seed=31).raw,
            render(label_volume("taufactor_electrode_256cube.tif")[:40, :192, :192], kvs,
                   rng=5, n_slices=6, drift_step_px=0.0).raw]
    for raw in raws:
        splits, warnings = check(net, card, preprocess_stack(raw, pre))
        assert warnings == [] and max(s["separation"] for s in splits.values()) < 4.0, splits
