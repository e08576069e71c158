"""Training the segmentation U-Net: simulated stacks with truth, augmentation, Lightning.

Training data are simulator stacks (:mod:`fibrecon.simulate`) with every
microstructure setting and artifact strength drawn at random per stack
(:data:`MICROSTRUCTURE_RANGES`, :data:`ARTIFACT_RANGE`), preprocessed with the
same settings the workflow uses, paired with the simulator's labels.
Optionally a user's annotations of slices of their own samples (sparse: 255 =
not annotated, :mod:`fibrecon.files.labelled`) fine-tune the result; the loss
and the validation count annotated pixels only. Whole simulated stacks, and a
strip at the right edge of every annotated slice, are held out for validation;
every random step is seeded.

PyTorch Lightning runs the loop and picks the GPU when one is visible.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import pytorch_lightning as pl
from scipy import ndimage as ndi
import torch
from torch.nn import functional as F

from fibrecon import NOT_ANNOTATED, PHASES
from fibrecon.align import shift_image
from fibrecon.evaluate import iou_from_confusion
from fibrecon.infer import context_image, resolve_device
from fibrecon.preprocess import PreprocessParams, preprocess_stack
from fibrecon.simulate import ARTIFACTS, simulate_sample
from fibrecon.settings import StageSettings
from fibrecon.unet import UNet, input_channels

__all__ = ["MICROSTRUCTURE_RANGES", "ARTIFACT_RANGE", "TrainSettings", "draw_settings",
           "synthetic_stack", "synthetic_stacks", "randomised_stack", "randomised_stacks",
           "randomised_record", "annotated_stacks", "split_annotations",
           "PatchDataset", "SegmentationTask", "confusion", "iou_from_confusion",
           "evaluate_stacks", "finetune_warnings", "grey_level_warnings", "train_model"]

#: Uniform ranges of the microstructure drawn for each training stack.
MICROSTRUCTURE_RANGES = {
    "porosity": (0.22, 0.48),
    "cbd_fraction": (0.05, 0.16),
    "d50_um": (1.0, 4.0),
    "sigma_log": (0.15, 0.35),
    "calendering": (0.0, 1.0),
    "cbd_dispersion": (0.0, 1.0),
    "grain_size_um": (0.4, 1.2),
}

#: Each artifact strength of a training stack is drawn uniformly from this range
#: (drift excepted: training stacks are registered by construction).
ARTIFACT_RANGE = (0.0, 2.0)


@dataclass(frozen=True, kw_only=True)
class TrainSettings(StageSettings):
    """Everything that decides a trained model (recorded in its model card).

    Attributes
    ----------
    kvs : list of float
        kV channels of the input, in order.
    context : int
        Neighbour slices on each side given as extra channels (0 = 2D).
    width, depth : int
        U-Net features at full resolution and number of poolings.
    stacks : int
        Simulated stacks generated; ``validation_fraction`` of them held out.
    stack_shape : tuple of int
        (z, y, x) of each simulated stack.
    voxel_size_um : float
        Isotropic voxel size of the simulated stacks.
    validation_fraction : float
        Share of the simulated stacks held out, and of each annotated slice's
        width (a strip at its right edge) held out from fine-tuning.
    steps, batch_size, patch_px : int
        Optimiser steps, patches per step, patch edge.
    learning_rate : float
        Peak of the one-cycle schedule (AdamW).
    seed : int
        Seeds the stacks, the split, the patches and the weights.
    randomised_stacks : int
        Domain-randomised stacks (:mod:`fibrecon.domain`) added to the
        simulated ones: microstructures of the simulator at pixel sizes drawn
        from ``randomised_pixel_um``, and of ``label_volumes``, each rendered
        with random grey levels (in any order), texture, blur, shine-through,
        artifacts and noise.
    label_volumes : list of str
        3D label TIFFs of other origins (three values: pore < AM < CBD) that
        half of the randomised stacks are cut from (randomly permuted, flipped,
        turned, rescaled; :func:`fibrecon.domain.transformed`).
    randomised_pixel_um : tuple of float
        Range of pixel sizes (µm) of the simulator microstructures rendered
        with random appearance (recorded in the card; the card's trained
        pixel-size range is still that of ``voxel_size_um``).
    finetune_steps : int
        Steps on annotated slices after the synthetic training.
    finetune_grey_jitter : float
        Scale of the grey-level augmentation (gain, offset, gamma) while
        fine-tuning on annotations (:class:`PatchDataset`; the simulated
        training uses 1). The annotated slices and the slices segmented come
        from the same preprocessed stack, so their grey levels match; jitter
        there hides the small grey differences that tell pore from CBD (on
        the real nano-CT slices of ``benchmarks/label_efficiency.py``, 1.0 ->
        0.3 raised the fine-tuned pore IoU from 0.43 to 0.48).
    annotations : str or None
        Folder of annotations, ``<sample>/slice_NNNN_labels.tif`` (read by the
        workflow with each sample's preprocessed stack; checksums in the card).
    init_model : str or None
        Model file to start from instead of random weights.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    workers : int
        Processes generating stacks (and loading patches on a GPU); the
        train_model rule runs with as many threads.
    """

    SECTION = "train"

    kvs: tuple = (1.0, 3.0)
    context: int = 1
    width: int = 8
    depth: int = 4
    stacks: int = 96
    stack_shape: tuple = (16, 256, 256)
    voxel_size_um: float = 0.05
    validation_fraction: float = 0.15
    steps: int = 18000
    batch_size: int = 16
    patch_px: int = 192
    learning_rate: float = 3e-3
    seed: int = 1
    randomised_stacks: int = 0
    label_volumes: tuple = ()
    randomised_pixel_um: tuple = (0.02, 0.08)
    finetune_steps: int = 500
    finetune_grey_jitter: float = 0.3
    annotations: str | None = None
    init_model: str | None = None
    device: str = "auto"
    workers: int = 1


def draw_settings(rng: np.random.Generator) -> dict:
    """Microstructure and artifact strengths of one training stack."""
    micro = {k: float(rng.uniform(*r)) for k, r in MICROSTRUCTURE_RANGES.items()}
    artifacts = {k: float(rng.uniform(*ARTIFACT_RANGE)) for k in ARTIFACTS if k != "drift"}
    artifacts["drift"] = 0.0
    return {**micro, "artifacts": artifacts}


def synthetic_stack(settings: dict, shape, voxel_size_um: float, kvs, preprocess: PreprocessParams,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One simulated, preprocessed stack and its labels.

    Returns
    -------
    images : ndarray of float16, (z, c, y, x)
    labels : ndarray of uint8, (z, y, x)
    """
    s = simulate_sample(shape, (voxel_size_um,) * 3, kvs, seed=seed, **settings)
    return preprocess_stack(s.raw, preprocess).astype(np.float16), s.labels


def _synthetic_job(args):
    return synthetic_stack(*args)


def _run_jobs(job, jobs: list, workers: int, progress):
    """``[job(j) for j in jobs]``, in ``workers`` processes when more than one, wrapped in ``progress``."""
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(job, jobs)
            return list(progress(results, total=len(jobs)) if progress else results)
    return [job(j) for j in (progress(jobs) if progress else jobs)]


def synthetic_stacks(n: int, shape, voxel_size_um: float, kvs, preprocess: PreprocessParams,
                     seed: int, *, workers: int = 1, progress=None):
    """``n`` random training stacks (seeded), generated by ``workers`` processes.

    Returns
    -------
    list of (images, labels, settings)
    """
    rng = np.random.default_rng(seed)
    settings = [draw_settings(rng) for _ in range(n)]
    seeds = rng.integers(0, 2**31, size=n)
    jobs = [(st, tuple(shape), voxel_size_um, tuple(kvs), preprocess, int(sd))
            for st, sd in zip(settings, seeds)]
    results = _run_jobs(_synthetic_job, jobs, workers, progress)
    return [(img, lab, {**st, "seed": int(sd)})
            for (img, lab), st, sd in zip(results, settings, seeds)]


#: Slices rendered below a randomised stack only for its shine-through.
_SHINE_SLICES = 10


def randomised_stack(source: str, shape, kvs, preprocess: PreprocessParams, seed: int,
                     pixel_um=(0.02, 0.08)) -> tuple[np.ndarray, np.ndarray, dict]:
    """One domain-randomised, preprocessed training stack and its labels.

    Parameters
    ----------
    source : str
        ``"simulator"`` (a microstructure of :func:`fibrecon.simulate.generate_microstructure`
        at a pixel size drawn log-uniformly from ``pixel_um``, settings from
        :data:`MICROSTRUCTURE_RANGES`) or the path of a 3D label TIFF
        (:func:`fibrecon.files.read_label_volume`), randomly transformed and cropped.
    shape : (z, y, x)
    kvs : sequence of float
    preprocess : PreprocessParams
    seed : int

    Returns
    -------
    images (z, c, y, x) float16, labels (z, y, x) uint8, draw (dict: what was drawn)
    """
    from fibrecon.domain import random_crop, render_randomised, transformed
    from fibrecon.simulate import generate_microstructure

    rng = np.random.default_rng(seed)
    full = (shape[0] + _SHINE_SLICES,) + tuple(shape[1:])
    if source == "simulator":
        vs = float(np.exp(rng.uniform(*np.log(pixel_um))))
        micro = {k: float(rng.uniform(*r)) for k, r in MICROSTRUCTURE_RANGES.items()}
        labels = generate_microstructure(full, (vs,) * 3, rng=rng, **micro).labels
        info = {"source": "simulator", "pixel_um": round(vs, 4), **micro}
    else:
        volume = _label_volume(source)
        try:
            labels = transformed(volume, rng, fit=full)
        except ValueError as e:
            raise ValueError(f"{source}: {e} (train.stack_shape plus {_SHINE_SLICES} slices "
                             "for the shine-through)") from None
        labels = random_crop(labels, full, rng)
        info = {"source": str(source)}
    raw, truth, draw = render_randomised(labels, kvs, rng, n_slices=shape[0])
    return preprocess_stack(raw, preprocess).astype(np.float16), truth, {**info, **draw}


@functools.lru_cache(maxsize=8)
def _label_volume(path: str) -> np.ndarray:
    """A label volume, read once per process (every randomised stack cuts from it anew)."""
    from fibrecon.files import read_label_volume

    volume = read_label_volume(path)
    volume.flags.writeable = False
    return volume


def _randomised_job(args):
    return randomised_stack(*args)


def randomised_stacks(n: int, shape, kvs, preprocess: PreprocessParams, seed: int,
                      label_volumes=(), pixel_um=(0.02, 0.08), *, workers: int = 1,
                      progress=None):
    """``n`` domain-randomised training stacks (seeded): half from the simulator's
    microstructures, half from ``label_volumes`` (all from the simulator when none).

    Returns
    -------
    list of (images, labels, settings)
    """
    rng = np.random.default_rng([seed, 17])
    sources = ["simulator"] * n
    if label_volumes:
        for i in range(n):
            if rng.random() < 0.5:
                sources[i] = str(label_volumes[int(rng.integers(len(label_volumes)))])
    seeds = rng.integers(0, 2**31, size=n)
    jobs = [(src, tuple(shape), tuple(kvs), preprocess, int(sd), tuple(pixel_um))
            for src, sd in zip(sources, seeds)]
    results = _run_jobs(_randomised_job, jobs, workers, progress)
    return [(img, lab, {**st, "seed": int(sd)}) for (img, lab, st), sd in zip(results, seeds)]


def randomised_record(s: TrainSettings, randomised: list, simulated_stacks: int) -> dict:
    """The model card's ``training_data: randomised`` entry: renderer, sources, level orders.

    ``randomised`` is the list :func:`randomised_stacks` returned.
    """
    from fibrecon.domain import LEVEL_ORDERS
    from fibrecon.files import file_sha256

    return {"stacks": len(randomised), "renderer": "fibrecon.domain.render_randomised",
            "simulated_stacks": simulated_stacks, "pixel_um": list(s.randomised_pixel_um),
            "label_volumes": {str(p): file_sha256(p) for p in s.label_volumes},
            "level_orders": {o: sum(1 for d in randomised if d[2].get("order") == o)
                             for o in LEVEL_ORDERS}}


def annotated_stacks(stack, annotations, channels, context: int):
    """Training stacks of annotated slices, cut from a sample's preprocessed stack.

    Each annotated slice z gives the slices z - context .. z + context (the
    first / last slice repeated beyond the stack), so that the network's input
    is built exactly as at inference; only the centre slice carries labels
    (the others are all :data:`fibrecon.NOT_ANNOTATED`).

    Parameters
    ----------
    stack : array-like, (z, c, y, x)
        The sample's preprocessed stack (e.g. a :class:`fibrecon.files.VolumeReader`).
    annotations : sequence of fibrecon.files.Annotation
        Annotations of this sample.
    channels : sequence of int
        Channel indices of the model's kV values in the stack.
    context : int

    Returns
    -------
    list of (images (2 context + 1, c, y, x) float16, labels (2 context + 1, y, x) uint8)
    """
    nz = len(stack)
    out = []
    for a in annotations:
        images = np.stack([np.asarray(stack[min(max(a.z + dz, 0), nz - 1)], np.float32)[list(channels)]
                           for dz in range(-context, context + 1)]).astype(np.float16)
        labels = np.full((2 * context + 1,) + a.labels.shape, NOT_ANNOTATED, np.uint8)
        labels[context] = a.labels
        out.append((images, labels))
    return out


def split_annotations(stacks, fraction: float):
    """Training and validation parts of annotated stacks: a strip at the right edge held out.

    The last ``fraction`` of each slice's width (at least one column, when
    ``fraction`` > 0) is not annotated in the training copy and is the only
    annotated part of the validation copy, so every annotated slice, even a
    single one, contributes to both and no pixel to both.

    Returns
    -------
    train, validation : lists of (images, labels)
        Validation stacks without an annotated pixel are left out.
    """
    train, val = [], []
    for images, labels in stacks:
        nx = labels.shape[-1]
        cut = nx - max(1, int(round(fraction * nx))) if fraction > 0 else nx
        t, v = labels.copy(), np.full_like(labels, NOT_ANNOTATED)
        t[..., cut:] = NOT_ANNOTATED
        v[..., cut:] = labels[..., cut:]
        if (t != NOT_ANNOTATED).any():
            train.append((images, t))
        if (v != NOT_ANNOTATED).any():
            val.append((images, v))
    return train, val


#: Grey-level ranges of the patch augmentation at ``grey_jitter`` 1 (:class:`PatchDataset`).
GAIN_RANGE, OFFSET_RANGE = 0.15, 0.08


class PatchDataset(torch.utils.data.Dataset):
    """Random augmented patches from (images, labels) stacks; item ``i`` is seeded by (seed, i).

    Augmentation: flips in y and x, and per channel a grey-level gain (0.85-1.15),
    offset (+-0.08) and gamma (0.8-1.25), all three ranges scaled by ``grey_jitter``,
    and added Gaussian noise (sigma up to 0.05).
    Rotations are left out: curtains always run along y. A stack with pixels
    not annotated (:data:`fibrecon.NOT_ANNOTATED`) gives patches around a
    random annotated pixel, so that every patch holds some labels. In half of the patches,
    what the alignment stage does to real stacks (the training stacks have no
    drift): every slice blurred as a bilinear subpixel shift blurs it (a random
    fraction of a pixel in y and x), and the neighbour slices displaced by a
    residual alignment error (normal, sd :data:`ALIGNMENT_ERROR_PX`), the labels
    staying with the centre slice.

    Parameters
    ----------
    stacks : list of (images (z, c, y, x), labels (z, y, x))
    patch : int
        Patch edge, pixels (at most the smallest stack's y and x).
    context : int
        Neighbour slices each side as extra channels.
    length : int
        Items per epoch.
    seed : int
    augment : bool
    grey_jitter : float
        Scale of the grey-level gain, offset and gamma ranges (1 = the ranges
        above, 0 = grey levels kept as they are; noise and flips either way).
    """

    def __init__(self, stacks, patch: int, context: int, length: int, seed: int,
                 augment: bool = True, grey_jitter: float = 1.0):
        self.stacks, self.patch, self.context = stacks, int(patch), int(context)
        self.length, self.seed, self.augment = int(length), int(seed), augment
        if grey_jitter < 0:
            raise ValueError(f"grey_jitter must be >= 0, got {grey_jitter}")
        self.grey_jitter = float(grey_jitter)
        small = [img.shape[-2:] for img, _ in stacks if min(img.shape[-2:]) < patch]
        if small:
            raise ValueError(f"patch_px = {patch} is larger than training image(s) {small[0]}")
        # sparse stacks: the annotated pixels, from which patch positions are drawn
        self.annotated = [np.argwhere(lab != NOT_ANNOTATED) if (lab == NOT_ANNOTATED).any()
                          else None for _, lab in stacks]
        empty = [k for k, a in enumerate(self.annotated) if a is not None and not len(a)]
        if empty:
            raise ValueError(f"training stack {empty[0]} has no annotated pixel")
        sizes = np.array([len(lab) if a is None else len(a) / np.prod(lab.shape[-2:])
                          for (_, lab), a in zip(stacks, self.annotated)], float)
        self.p = sizes / sizes.sum()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, i])
        k = rng.choice(len(self.stacks), p=self.p)
        images, labels = self.stacks[k]
        ny, nx = labels.shape[-2:]
        if self.annotated[k] is None:
            z = int(rng.integers(len(labels)))
            y0, x0 = (int(rng.integers(n - self.patch + 1)) for n in (ny, nx))
        else:  # a patch holding a random annotated pixel, anywhere in it
            z, yc, xc = (int(v) for v in self.annotated[k][rng.integers(len(self.annotated[k]))])
            y0, x0 = (int(np.clip(c - rng.integers(self.patch), 0, n - self.patch))
                      for c, n in ((yc, ny), (xc, nx)))
        box = (slice(y0, y0 + self.patch), slice(x0, x0 + self.patch))
        x = context_image(images[(Ellipsis,) + box], z, range(images.shape[1]), self.context)
        y = np.asarray(labels[z][box], dtype=np.int64)
        if self.augment:
            if rng.random() < 0.5:
                x = _realigned(x, self.context, rng)
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[::-1]
            if rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]
            c, g = x.shape[0], self.grey_jitter
            gain = rng.uniform(1 - GAIN_RANGE * g, 1 + GAIN_RANGE * g, (c, 1, 1))
            offset = rng.uniform(-OFFSET_RANGE * g, OFFSET_RANGE * g, (c, 1, 1))
            gamma = np.exp(rng.uniform(np.log(0.8) * g, np.log(1.25) * g, (c, 1, 1)))
            if g > 0:
                x = np.clip(x, 0, None) ** gamma * gain + offset
            x = x + rng.normal(0, rng.uniform(0, 0.05), x.shape)
        return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(y)))


#: Residual alignment error (px, sd per axis) between neighbour slices in the augmentation;
#: the drift estimate's error on the simulated 200-slice stack is 0.29 px RMS.
ALIGNMENT_ERROR_PX = 0.3


def _realigned(x: np.ndarray, context: int, rng: np.random.Generator) -> np.ndarray:
    """A context image as the alignment stage leaves it: resampled, neighbours slightly off.

    Each slice's channels are blurred by the symmetric kernel with the variance
    of a bilinear shift by a random fraction f of a pixel (f (1 - f) per axis);
    the neighbour slices are shifted by a normal error besides (bilinear; the
    pixels moved in from outside take the slice's median).
    """
    slices = 2 * context + 1
    per = x.shape[0] // slices
    out = np.empty(x.shape, np.float32)
    for j in range(slices):
        f = rng.uniform(0.0, 1.0, 2)
        a = f * (1.0 - f) / 2.0  # [a, 1 - 2a, a] has the variance f (1 - f) of [1 - f, f]
        error = rng.normal(0.0, ALIGNMENT_ERROR_PX, 2) if j != context else (0.0, 0.0)
        for c in range(j * per, (j + 1) * per):
            img = ndi.convolve1d(x[c], [a[0], 1 - 2 * a[0], a[0]], axis=0, mode="nearest")
            img = ndi.convolve1d(img, [a[1], 1 - 2 * a[1], a[1]], axis=1, mode="nearest")
            if j != context:
                img = shift_image(img, error, fill=float(np.median(img)))
            out[c] = img
    return out


def confusion(pred: torch.Tensor, truth: torch.Tensor, n: int = 3) -> torch.Tensor:
    """n x n confusion counts (rows truth, columns prediction) of the annotated pixels.

    Pixels whose truth is :data:`fibrecon.NOT_ANNOTATED` are not counted.
    """
    keep = truth.reshape(-1) != NOT_ANNOTATED
    return torch.bincount(truth.reshape(-1)[keep] * n + pred.reshape(-1)[keep],
                          minlength=n * n).reshape(n, n)


def masked_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + soft Dice over the annotated pixels (:data:`fibrecon.NOT_ANNOTATED` ignored)."""
    logits = logits.float()
    valid = (y != NOT_ANNOTATED)
    prob = logits.softmax(1) * valid[:, None]
    onehot = F.one_hot(torch.where(valid, y, 0), prob.shape[1]).permute(0, 3, 1, 2).float()
    onehot = onehot * valid[:, None]
    inter = (prob * onehot).sum((0, 2, 3))
    dice = 1 - ((2 * inter + 1) / (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)).mean()
    return F.cross_entropy(logits, y, ignore_index=NOT_ANNOTATED) + dice


class SegmentationTask(pl.LightningModule):
    """Lightning wrapper: cross-entropy + soft Dice loss (:func:`masked_loss`), AdamW,
    one-cycle schedule.

    Validation accumulates a confusion matrix over the annotated pixels of
    whole held-out slices and logs the per-phase IoU (``val_iou_pore``,
    ``val_iou_am``, ``val_iou_cbd``).
    """

    def __init__(self, net: UNet, learning_rate: float, steps: int):
        super().__init__()
        self.net, self.learning_rate, self.steps = net, learning_rate, steps
        self.cm = torch.zeros(3, 3, dtype=torch.long)
        self.last_val = {}

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = masked_loss(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def on_validation_epoch_start(self):
        self.cm = torch.zeros(3, 3, dtype=torch.long)

    def validation_step(self, batch, _):
        x, y = batch
        self.cm += confusion(self.net(x).argmax(1), y).cpu()

    def on_validation_epoch_end(self):
        self.last_val = iou_from_confusion(self.cm)
        for k, v in self.last_val.items():
            self.log(f"val_{k}", v, prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.learning_rate, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.learning_rate,
                                                    total_steps=max(self.steps, 2))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _SliceDataset(torch.utils.data.Dataset):
    """Whole slices (network input, labels) of held-out stacks with annotated pixels."""

    def __init__(self, stacks, context: int, multiple: int):
        self.items = [(k, z) for k, (_, lab) in enumerate(stacks) for z in range(len(lab))
                      if (lab[z] != NOT_ANNOTATED).any()]
        self.stacks, self.context, self.multiple = stacks, context, multiple

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        k, z = self.items[i]
        images, labels = self.stacks[k]
        ny, nx = (n // self.multiple * self.multiple for n in labels.shape[-2:])
        x = context_image(images[..., :ny, :nx], z, range(images.shape[1]), self.context)
        return torch.from_numpy(x), torch.from_numpy(np.asarray(labels[z][:ny, :nx], np.int64))


def finetune_warnings(before: dict, after: dict, tolerance: float = 0.02) -> list[str]:
    """Phases whose held-out IoU fell by more than ``tolerance`` in fine-tuning, as messages.

    Examples
    --------
    >>> finetune_warnings({"iou_cbd": 0.60, "iou_am": 0.9}, {"iou_cbd": 0.52, "iou_am": 0.95})
    ['held-out IoU of cbd fell from 0.600 to 0.520 in fine-tuning: annotate more of that phase, or keep the previous model']
    """
    return [f"held-out IoU of {k[4:]} fell from {before[k]:.3f} to {after[k]:.3f} in "
            "fine-tuning: annotate more of that phase, or keep the previous model"
            for k in before if k in after and after[k] < before[k] - tolerance]


def grey_level_warnings(stacks, names, jitter: float, min_pixels: int = 100) -> list[str]:
    """Annotated slices whose AM grey levels differ more than fine-tuning's grey jitter covers.

    Fine-tuning moves each patch's grey levels by at most an offset of
    ``OFFSET_RANGE * jitter`` and a gain of ``GAIN_RANGE * jitter``
    (:class:`PatchDataset`). Where the median grey level of the annotated AM
    pixels (the majority phase, so the phase mix of a slice does not enter)
    differs between annotated slices by more than that range twice over
    (at least 0.02), the slices were not brought to one grey scale, and a
    network fine-tuned with little jitter learns grey levels the other
    slices do not have.

    Parameters
    ----------
    stacks : sequence of (images (z, c, y, x), labels (z, y, x))
        :func:`annotated_stacks`; the slice with labels is the annotated one.
    names : sequence of str
        One per stack, for the messages.
    jitter : float
        ``train.finetune_grey_jitter``.
    min_pixels : int
        Slices with fewer annotated AM pixels are left out.

    Returns
    -------
    list of str, one per kV channel out of range.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.ones((1, 20, 20), np.uint8)
    >>> a, b = np.full((1, 1, 20, 20), 0.6), np.full((1, 1, 20, 20), 0.9)
    >>> grey_level_warnings([(a, lab), (b, lab)], ["s1 slice 3", "s2 slice 7"], 0.3)
    ['channel 0: the annotated AM grey level is 0.600 in s1 slice 3 and 0.900 in s2 slice 7 (a spread of 0.300); train.finetune_grey_jitter = 0.3 covers 0.115: raise it towards 1, or preprocess the annotated samples alike']
    >>> grey_level_warnings([(a, lab), (a + 0.01, lab)], ["s1 slice 3", "s2 slice 7"], 0.3)
    []
    """
    levels = []  # (name, medians per channel)
    for (images, labels), name in zip(stacks, names):
        annotated = [z for z in range(len(labels)) if (labels[z] != NOT_ANNOTATED).any()]
        for z in annotated:
            am = labels[z] == 1
            if am.sum() >= min_pixels:
                levels.append((name, [float(np.median(np.asarray(ch, np.float32)[am]))
                                      for ch in images[z]]))
    out = []
    for c in range(len(levels[0][1]) if levels else 0):
        lo = min(levels, key=lambda v: v[1][c])
        hi = max(levels, key=lambda v: v[1][c])
        level = float(np.mean([v[1][c] for v in levels]))
        covered = max(2 * (OFFSET_RANGE + GAIN_RANGE * abs(level)) * jitter, 0.02)
        spread = hi[1][c] - lo[1][c]
        if spread > covered:
            out.append(f"channel {c}: the annotated AM grey level is {lo[1][c]:.3f} in {lo[0]} "
                       f"and {hi[1][c]:.3f} in {hi[0]} (a spread of {spread:.3f}); "
                       f"train.finetune_grey_jitter = {jitter:g} covers {covered:.3f}: raise it "
                       "towards 1, or preprocess the annotated samples alike")
    return out


def evaluate_stacks(net: UNet, stacks, context: int) -> dict:
    """Per-phase IoU of ``net`` over the annotated pixels of whole slices of ``stacks``."""
    was_training = net.training
    net.eval()
    cm = torch.zeros(3, 3, dtype=torch.long)
    with torch.inference_mode():
        for x, y in _SliceDataset(stacks, context, net.multiple):
            cm += confusion(net(x[None]).argmax(1), y[None])
    net.train(was_training)
    return iou_from_confusion(cm)


def _fit(net, train_stacks, val_stacks, s: TrainSettings, steps: int, seed: int, accelerator,
         log_dir, progress_bar: bool, grey_jitter: float = 1.0):
    net.train()  # a loaded model comes in eval mode, and Lightning keeps the modes it finds
    task = SegmentationTask(net, s.learning_rate, steps)
    loader = torch.utils.data.DataLoader(
        PatchDataset(train_stacks, s.patch_px, s.context, steps * s.batch_size, seed,
                     grey_jitter=grey_jitter),
        batch_size=s.batch_size, shuffle=False,
        num_workers=min(s.workers, 8) if accelerator == "gpu" else 0,
        persistent_workers=accelerator == "gpu" and s.workers > 0)
    val = torch.utils.data.DataLoader(_SliceDataset(val_stacks, s.context, net.multiple),
                                      batch_size=1) if val_stacks else None
    precision = "bf16-mixed" if accelerator == "gpu" else "32-true"
    trainer = pl.Trainer(
        max_steps=steps, accelerator=accelerator, devices=1, precision=precision,
        logger=pl.loggers.CSVLogger(log_dir, name="") if log_dir else False,
        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
        enable_progress_bar=progress_bar,
        limit_val_batches=1.0 if val else 0, val_check_interval=max(steps // 4, 1),
        check_val_every_n_epoch=None, log_every_n_steps=max(min(50, steps // 10), 1),
        deterministic=accelerator == "cpu")
    trainer.fit(task, loader, val)
    return task.last_val


def train_model(s: TrainSettings, preprocess: PreprocessParams, *, user_stacks=(),
                init: tuple | None = None, simulated=None, device: str = "auto", log_dir=None,
                progress=None, progress_bar: bool = True) -> tuple[UNet, dict]:
    """Train (or fine-tune) a U-Net; returns it and its model card.

    Parameters
    ----------
    s : TrainSettings
    preprocess : PreprocessParams
        Applied to the simulated stacks: must be what the workflow applies
        before segmentation (it is recorded in the card).
    user_stacks : sequence of (images (z, c, y, x), labels (z, y, x))
        Annotated stacks (:func:`annotated_stacks`; 255 = not annotated). The
        right ``s.validation_fraction`` of each slice's width is held out
        (:func:`split_annotations`); the card gives the IoU there before and
        after fine-tuning.
    init : (UNet, card), optional
        Start from this model and its card (from :func:`fibrecon.unet.load_model`):
        its kV channels and context must be those of ``s``; the new card keeps
        the old one under ``"init"`` so that the training history stays with the
        weights. With ``s.stacks = 0`` only fine-tuning runs.
    simulated : tuple (list, kvs), optional
        Stacks from :func:`synthetic_stacks` made earlier and their kV list
        (a superset of ``s.kvs``; the needed channels are picked): used
        instead of generating ``s.stacks`` new ones, so that models compared
        with each other see the same data.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    log_dir : path, optional
        Lightning's CSV log of losses and validation IoU.
    progress : callable, optional
        Wraps the generation of the simulated stacks.
    progress_bar : bool
        Lightning's progress bar of the training steps.

    Returns
    -------
    net : UNet (on CPU, eval mode)
    card : dict
        kV channels, context, preprocessing, settings, training data, per-phase
        validation IoU, time, device and versions.
    """
    t0 = time.perf_counter()
    device = resolve_device(device)
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    pl.seed_everything(s.seed, workers=True, verbose=False)
    n_in = input_channels(s.kvs, s.context)
    net = init[0] if init is not None else UNet(n_in, width=s.width, depth=s.depth)
    if init is not None:
        have = ([float(k) for k in init[1]["kvs"]], int(init[1]["context"]))
        if have != ([float(k) for k in s.kvs], int(s.context)):
            raise ValueError(f"initial model takes kV channels {have[0]} with context {have[1]}; "
                             f"the training settings ask for {list(s.kvs)} with context "
                             f"{s.context}")
    card = {"kvs": [float(k) for k in s.kvs], "context": int(s.context),
            "classes": {int(k): v for k, v in PHASES.items()},
            "receptive_field_px": net.receptive_field, "architecture": net.hparams,
            "preprocess": asdict(preprocess), "settings": asdict(s),
            "training_data": {}, "validation": {}}
    if init is not None:
        card["init"] = init[1]
    if simulated is not None:
        data, have = simulated
        pick = [[float(k) for k in have].index(float(k)) for k in s.kvs]
        data = [(img[:, pick], lab, st) for img, lab, st in data]
    elif s.stacks > 0:
        data = synthetic_stacks(s.stacks, s.stack_shape, s.voxel_size_um, s.kvs, preprocess,
                                s.seed, workers=s.workers, progress=progress)
    else:
        data = []
    n_sim = len(data)
    if s.randomised_stacks > 0:
        data = data + randomised_stacks(s.randomised_stacks, s.stack_shape, s.kvs, preprocess,
                                        s.seed, s.label_volumes, s.randomised_pixel_um,
                                        workers=s.workers, progress=progress)
    if data:
        n_val = max(1, int(round(s.validation_fraction * len(data)))) if len(data) > 1 else 0
        order = np.random.default_rng(s.seed + 1).permutation(len(data))
        val = [data[i] for i in order[:n_val]]
        train = [data[i] for i in order[n_val:]]
        card["validation"]["simulated"] = _fit(
            net, [d[:2] for d in train], [d[:2] for d in val], s, s.steps, s.seed, accelerator,
            log_dir, progress_bar)
        card["training_data"]["simulated"] = {
            "stacks": len(train), "validation_stacks": n_val, "shape": list(s.stack_shape),
            "microstructure_ranges": MICROSTRUCTURE_RANGES, "artifact_range": ARTIFACT_RANGE,
            "seeds": [int(d[2]["seed"]) for d in train],
            "validation_seeds": [int(d[2]["seed"]) for d in val]}
        if s.randomised_stacks > 0:
            card["training_data"]["randomised"] = randomised_record(s, data[n_sim:], n_sim)
    if len(user_stacks) and s.finetune_steps > 0:
        bad = [im.shape[1] for im, _ in user_stacks if im.shape[1] != len(s.kvs)]
        if bad:
            raise ValueError(f"annotated stacks have {bad[0]} channel(s); the model takes "
                             f"{len(s.kvs)} (kV {list(s.kvs)})")
        train, val = split_annotations(user_stacks, s.validation_fraction)
        if not train:
            raise ValueError("no annotated pixel is left for fine-tuning once the validation "
                             f"strip (train.validation_fraction = {s.validation_fraction}) is "
                             "held out: annotate more of each slice's width")
        ft = TrainSettings(**{**asdict(s), "learning_rate": s.learning_rate / 3,
                              "patch_px": min([s.patch_px] + [min(im.shape[-2:]) // net.multiple
                                                               * net.multiple for im, _ in train])})
        before = evaluate_stacks(net, val, s.context) if val and init is not None else None
        # the strip is scored once after training (below), not by Lightning along the way
        _fit(net, train, [], ft, s.finetune_steps, s.seed + 3, accelerator, log_dir,
             progress_bar, grey_jitter=s.finetune_grey_jitter)
        net.cpu()
        card["validation"]["annotations"] = evaluate_stacks(net, val, s.context) if val else {}
        if before is not None:
            card["validation"]["annotations_before"] = before
        card["training_data"]["annotations"] = {
            "slices": len(user_stacks),
            "annotated_pixels": int(sum((lab != NOT_ANNOTATED).sum() for _, lab in user_stacks)),
            "validation": f"right {s.validation_fraction:.0%} of each slice's width"}
    card.update(device=device, seconds=round(time.perf_counter() - t0, 1),
                torch=str(torch.__version__), lightning=str(pl.__version__))
    return net.cpu().eval(), card
