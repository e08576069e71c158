"""Sparse annotations (255 = not annotated): reading, the loss, patches, validation, fine-tuning."""

import numpy as np
import pytest
import tifffile
import torch

from fibrecon import NOT_ANNOTATED, files
from fibrecon.training import (PatchDataset, TrainSettings, annotated_stacks, confusion,
                               masked_loss, split_annotations, train_model)
from fibrecon.preprocess import PreprocessParams
from fibrecon.unet import UNet


def test_annotations_are_found_by_sample_and_slice_and_bad_ones_named(tmp_path):
    (tmp_path / "s1").mkdir()
    lab = np.full((20, 24), NOT_ANNOTATED, np.uint8)
    lab[2:5, 3:9] = 1
    lab[10, :] = 0
    tifffile.imwrite(tmp_path / "s1" / "slice_0007_labels.tif", lab)
    found = files.find_annotations(tmp_path, {"s1", "s2"}, {"s1": (10, 20, 24)})
    assert [(a.sample, a.z) for a in found] == [("s1", 7)]
    assert found[0].counts() == {"pore": 24, "am": 18, "cbd": 0}
    assert found[0].describe()["sha256"] == files.file_sha256(tmp_path / "s1" / "slice_0007_labels.tif")
    with pytest.raises(ValueError, match=r"slice_0007_labels.tif: shape \(20, 24\), but the slices"):
        files.find_annotations(tmp_path, {"s1"}, {"s1": (10, 20, 30)})
    with pytest.raises(ValueError, match="slice 7 is beyond sample 's1'"):
        files.find_annotations(tmp_path, {"s1"}, {"s1": (5, 20, 24)})
    (tmp_path / "ghost").mkdir()
    with pytest.raises(ValueError, match="ghost: no sample 'ghost' in the sample sheet"):
        files.annotation_files(tmp_path, {"s1"})
    (tmp_path / "ghost").rmdir()
    tifffile.imwrite(tmp_path / "s1" / "slice_0001_labels.tif", np.full((20, 24), 7, np.uint8))
    with pytest.raises(ValueError, match=r"slice_0001_labels.tif: unexpected label values \[7\]"):
        files.find_annotations(tmp_path, {"s1"})
    tifffile.imwrite(tmp_path / "s1" / "slice_0001_labels.tif",
                     np.full((20, 24), NOT_ANNOTATED, np.uint8))
    with pytest.raises(ValueError, match="no pixel is annotated"):
        files.find_annotations(tmp_path, {"s1"})
    tifffile.imwrite(tmp_path / "s1" / "slice_1_labels.tif", lab)
    (tmp_path / "s1" / "slice_0001_labels.tif").unlink()
    (tmp_path / "s1" / "slice_1_labels.tif").rename(tmp_path / "s1" / "mine.tif")
    with pytest.raises(ValueError, match="mine.tif: not an annotation name"):
        files.annotation_files(tmp_path, {"s1"})


def test_the_loss_and_the_confusion_ignore_pixels_not_annotated():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    y = torch.randint(0, 3, (2, 8, 8))
    sparse = y.clone()
    sparse[:, :, 4:] = NOT_ANNOTATED
    # the loss of a sparse label image equals that of its annotated half alone
    a = masked_loss(logits, sparse)
    b = masked_loss(logits[:, :, :, :4], y[:, :, :4])
    assert torch.allclose(a, b, atol=1e-6)
    a.backward()
    assert logits.grad[:, :, :, 4:].abs().max() == 0  # nothing flows from unannotated pixels
    cm = confusion(torch.zeros(2, 8, 8, dtype=torch.long), sparse)
    assert int(cm.sum()) == 2 * 8 * 4


def test_sparse_patches_hold_annotated_pixels_and_the_strip_is_held_out():
    img = np.random.default_rng(0).random((3, 2, 64, 64)).astype(np.float16)
    lab = np.full((3, 64, 64), NOT_ANNOTATED, np.uint8)
    lab[1, 50:52, 5:60] = 2  # one stroke in the centre slice
    train, val = split_annotations([(img, lab)], 0.2)
    assert (train[0][1][..., 51:] == NOT_ANNOTATED).all()
    assert (val[0][1][..., :51] == NOT_ANNOTATED).all() and (val[0][1] == 2).sum() == 2 * 9
    ds = PatchDataset(train, 32, 1, 50, seed=3)
    for i in range(50):
        x, y = ds[i]
        assert x.shape == (6, 32, 32) and (y != NOT_ANNOTATED).any()


def test_annotated_stacks_take_the_models_channels_and_context_from_the_sample():
    stack = np.arange(5)[:, None, None, None] + np.array([0, 10, 20])[None, :, None, None] \
        + np.zeros((5, 3, 4, 6))
    lab = np.full((4, 6), NOT_ANNOTATED, np.uint8)
    lab[0, 0] = 1
    a = files.Annotation("s", 4, None, lab, "")
    ((images, labels),) = annotated_stacks(stack, [a], [2, 0], context=1)
    assert images[:, :, 0, 0].tolist() == [[23, 3], [24, 4], [24, 4]]  # z 3, 4, 4 (end repeated)
    assert (labels[[0, 2]] == NOT_ANNOTATED).all() and labels[1, 0, 0] == 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_strokes_alone_teach_the_phases_and_the_card_reports_the_held_out_strip(seed):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (1, 96, 96)).repeat(8, 1).repeat(8, 2)[:, :96, :96]
    grey = np.array([0.1, 0.9, 0.5], np.float32)[truth]
    images = (grey + rng.normal(0, 0.08, grey.shape)).astype(np.float16)[:, None]
    labels = np.full(truth.shape, NOT_ANNOTATED, np.uint8)
    labels[:, ::6] = truth[:, ::6]  # thin lines, 1 row in 6 (about 17 % of the pixels)
    s = TrainSettings(kvs=[1.0], context=0, stacks=0, finetune_steps=150, batch_size=4,
                      patch_px=48, learning_rate=1e-2, validation_fraction=0.25, seed=seed)
    torch.manual_seed(seed)
    net = UNet(1, width=4, depth=2)
    net, card = train_model(s, PreprocessParams(), user_stacks=[(images, labels)],
                            init=(net, {"kvs": [1.0], "context": 0}), device="cpu",
                            progress_bar=False)
    after, before = card["validation"]["annotations"], card["validation"]["annotations_before"]
    assert min(after.values()) > 0.7, after  # chance is about 0.33
    assert min(after.values()) > max(before.values()), (before, after)
    assert card["training_data"]["annotations"]["annotated_pixels"] == int((labels != 255).sum())


def test_a_phase_that_fine_tuning_made_worse_is_a_warning_with_both_numbers():
    from fibrecon.training import finetune_warnings

    before = {"iou_pore": 0.9, "iou_am": 0.95, "iou_cbd": 0.60}
    assert finetune_warnings(before, {"iou_pore": 0.91, "iou_am": 0.94, "iou_cbd": 0.65}) == []
    (message,) = finetune_warnings(before, {"iou_pore": 0.91, "iou_am": 0.95, "iou_cbd": 0.50})
    assert "cbd fell from 0.600 to 0.500" in message
