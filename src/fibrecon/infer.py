"""Tiled U-Net inference: overlapping tiles, blended logits, one slice at a time.

A slice larger than the tile is cut into tiles that overlap by ``overlap``
pixels; each tile's logits are weighted by a window that falls off linearly
over the overlap, summed, and divided by the summed weights, so tile seams do
not show. Tiles are padded (by reflection) to a multiple of the network's
``2**depth``.
"""

from __future__ import annotations

import collections

import numpy as np
import torch
from torch.nn import functional as F

from fibrecon.unet import UNet

__all__ = ["FLIPS", "resolve_device", "prepare_for_inference", "context_image", "context_images",
           "tile_starts", "predict_probabilities", "predict_probabilities_resampled"]


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA GPU "
                           f"(torch {torch.__version__}); use device: auto or cpu")
    return device


def prepare_for_inference(net: UNet, device: str = "cpu") -> torch.nn.Module:
    """Eval-mode network on ``device``; on CPU batch norm is folded into the convolutions.

    Folding (torch.fx) and channels-last memory format together made a
    width-8 U-Net 1.7x faster on 2 CPU cores (benchmarks/RESULTS.md).
    """
    net = net.eval().to(device)
    if device == "cpu":
        from torch.fx.experimental.optimization import fuse

        net = fuse(net)
    return net.to(memory_format=torch.channels_last)


def context_image(stack, z: int, channels, context: int) -> np.ndarray:
    """Network input of slice ``z``: the selected channels of slices z-context..z+context.

    Slices beyond the stack repeat the first / last one. Slice-major order:
    all channels of z-context first.
    """
    nz = len(stack)
    parts = []
    for dz in range(-context, context + 1):
        img = np.asarray(stack[min(max(z + dz, 0), nz - 1)], dtype=np.float32)
        parts.append(img[list(channels)])
    return np.concatenate(parts, axis=0)


def context_images(stack, channels, context: int):
    """:func:`context_image` of every slice in z order, each slice read from ``stack`` once.

    A window of the last ``2 * context + 1`` slices slides along z, so 2.5D
    inference does not read every slice three times.
    """
    nz, channels = len(stack), list(channels)

    def read(z):
        return np.asarray(stack[min(max(z, 0), nz - 1)], dtype=np.float32)[channels]

    window = collections.deque((read(dz) for dz in range(-context, context + 1)),
                               maxlen=2 * context + 1)
    for z in range(nz):
        if z:
            window.append(read(z + context))
        yield np.concatenate(window, axis=0)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``size`` px, overlapping >= ``overlap``.

    Examples
    --------
    >>> tile_starts(1000, 512, 64)
    [0, 448, 488]
    >>> tile_starts(300, 512, 64)
    [0]
    """
    if tile >= size:
        return [0]
    step = tile - overlap
    if step <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}")
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def _window(tile_shape, overlap: int) -> np.ndarray:
    """Blending weights: 1 inside, falling linearly to ~0 over ``overlap`` px at the edges."""
    ramps = []
    for n in tile_shape:
        r = np.ones(n, np.float32)
        k = min(overlap, n // 2)
        if k > 0:
            edge = (np.arange(k, dtype=np.float32) + 0.5) / k
            r[:k] = edge
            r[n - k:] = edge[::-1]
        ramps.append(r)
    return np.outer(*ramps)


#: Mirror images averaged by :func:`predict_probabilities` (dims of an (n, c, y, x) batch).
FLIPS = {"none": (), "x": ((3,),), "xy": ((3,), (2,), (2, 3))}


def _logits(net: torch.nn.Module, x: torch.Tensor, flips: str) -> torch.Tensor:
    """The network's logits, averaged with those of the mirrored input flipped back."""
    out = net(x).float()
    for dims in FLIPS[flips]:
        out += net(x.flip(dims).contiguous(memory_format=torch.channels_last)).float().flip(dims)
    return out / (1 + len(FLIPS[flips]))


def predict_probabilities(net: torch.nn.Module, image: np.ndarray, *, multiple: int,
                          tile: int = 1024, overlap: int = 64, batch_size: int = 2,
                          device: str = "cpu", flips: str = "none") -> np.ndarray:
    """Class probabilities of one image with tiled, blended inference.

    Parameters
    ----------
    net : torch.nn.Module
        From :func:`prepare_for_inference`.
    image : ndarray, (channels, y, x)
        Network input (see :func:`context_image`).
    multiple : int
        The network's input size multiple (``UNet.multiple``).
    tile, overlap : int
        Tile edge and minimum overlap, pixels.
    batch_size : int
        Tiles per forward pass.
    device : str
        Where ``net`` lives.
    flips : {"none", "x", "xy"}
        Test-time augmentation: average the logits of the image and of its
        mirror image along x (2 passes), or along x, y and both (4 passes).
        The network was trained with these flips; averaging removes part of
        its orientation-dependent error at 2 or 4 times the cost
        (``benchmarks/RESULTS.md``: held-out CBD IoU +0.005 / +0.008).

    Returns
    -------
    ndarray of float32, (classes, y, x)
        Softmax of the blended logits.
    """
    if flips not in FLIPS:
        raise ValueError(f"flips must be one of {sorted(FLIPS)}, got {flips!r}")
    c, ny, nx = image.shape
    tile = max(multiple, tile // multiple * multiple)
    py, px = (-(-n // multiple) * multiple - n for n in (ny, nx))
    padded = np.pad(image, ((0, 0), (0, py), (0, px)),
                    mode="reflect" if py < ny and px < nx else "edge")
    ty, tx = min(tile, padded.shape[1]), min(tile, padded.shape[2])
    boxes = [(y, x) for y in tile_starts(padded.shape[1], ty, overlap)
             for x in tile_starts(padded.shape[2], tx, overlap)]
    weight = _window((ty, tx), overlap if len(boxes) > 1 else 0)
    acc = None
    wsum = np.zeros(padded.shape[1:], np.float32)
    with torch.inference_mode():
        for i in range(0, len(boxes), batch_size):
            chunk = boxes[i: i + batch_size]
            x = torch.from_numpy(np.stack([padded[:, y: y + ty, x0: x0 + tx] for y, x0 in chunk]))
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            logits = _logits(net, x, flips).cpu().numpy()
            if acc is None:
                acc = np.zeros((logits.shape[1],) + padded.shape[1:], np.float32)
            for (y, x0), lg in zip(chunk, logits):
                acc[:, y: y + ty, x0: x0 + tx] += lg * weight
                wsum[y: y + ty, x0: x0 + tx] += weight
    logits = torch.from_numpy(acc[:, :ny, :nx] / wsum[:ny, :nx])
    return F.softmax(logits, dim=0).numpy()


def predict_probabilities_resampled(net: torch.nn.Module, image: np.ndarray, *, scale=(1.0, 1.0),
                                    **kwargs) -> np.ndarray:
    """Class probabilities of an image whose pixels are ``scale`` times the network's own.

    nnU-Net's practice for data at another resolution than the training's:
    the image is resampled (bilinear) to the network's working pixel size,
    segmented by :func:`predict_probabilities`, and the probabilities are
    resampled back to the image's grid.

    Parameters
    ----------
    image : ndarray, (channels, y, x)
    scale : tuple of 2 float
        (y, x) pixel size of the image over the network's working pixel size
        (:meth:`fibrecon.modelcard.ModelCard.working_scale`); 2 means the image
        is twice as coarse (it is enlarged twice).
    **kwargs
        As for :func:`predict_probabilities`.

    Returns
    -------
    ndarray of float32, (classes, y, x)
        On the grid of ``image``.
    """
    from scipy import ndimage as ndi

    sy, sx = (float(v) for v in scale)
    if abs(sy - 1) < 1e-3 and abs(sx - 1) < 1e-3:
        return predict_probabilities(net, image, **kwargs)
    _, ny, nx = image.shape
    working = ndi.zoom(np.asarray(image, np.float32), (1, sy, sx), order=1, grid_mode=True,
                       mode="nearest")
    prob = predict_probabilities(net, working, **kwargs)
    back = ndi.zoom(prob, (1, ny / prob.shape[1], nx / prob.shape[2]), order=1, grid_mode=True,
                    mode="nearest")[:, :ny, :nx]
    back = np.clip(back, 0, None)
    return (back / np.maximum(back.sum(axis=0, keepdims=True), 1e-12)).astype(np.float32)
