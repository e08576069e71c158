"""The segmentation network: a 2D U-Net over the kV channels (and optional neighbour slices).

Ronneberger, Fischer & Brox (2015), "U-Net: convolutional networks for
biomedical image segmentation", MICCAI, LNCS 9351, 234-241.

The input of one prediction is a (channels, y, x) image: the preprocessed
kV channels of one slice, or with ``context`` > 0 the kV channels of the
slices z-context .. z+context (2.5D), in that order (slice-major). The output
is 3 logits per pixel: 0 pore, 1 AM, 2 CBD.

A model travels as one file written by :func:`save_model` (the weights, the
architecture and its model card, :mod:`fibrecon.modelcard`) and is read back
by :func:`load_model`, which says exactly what is wrong with a file that is
not such a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["UNet", "ModelLoadError", "save_model", "load_model", "input_channels", "widen"]

FORMAT = "fibrecon-unet/1"


class _Block(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch normalisation and ReLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """A U-Net with ``depth`` poolings and ``width * 2**level`` features per level.

    Parameters
    ----------
    in_channels : int
        Input channels (kV channels x (2 * context + 1) slices).
    n_classes : int
        Output classes (3: pore, AM, CBD).
    width : int
        Features at full resolution.
    depth : int
        Number of 2x poolings; input sizes must be multiples of ``2**depth``
        (tiled inference pads to that).

    Examples
    --------
    >>> net = UNet(2, width=4, depth=2)
    >>> net(torch.zeros(1, 2, 32, 32)).shape
    torch.Size([1, 3, 32, 32])
    """

    def __init__(self, in_channels: int, n_classes: int = 3, width: int = 16, depth: int = 4):
        super().__init__()
        self.hparams = {"in_channels": int(in_channels), "n_classes": int(n_classes),
                        "width": int(width), "depth": int(depth)}
        feats = [width * 2 ** level for level in range(depth + 1)]
        self.down = nn.ModuleList([_Block(in_channels, feats[0])] +
                                  [_Block(feats[i], feats[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(feats[i + 1], feats[i], 2, stride=2)
                                 for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_Block(2 * feats[i], feats[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(feats[0], n_classes, 1)

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** self.hparams["depth"]

    @property
    def receptive_field(self) -> int:
        """Receptive field of one output pixel, pixels.

        Each 3x3 convolution at scale ``s`` adds ``2 s``, each 2x2 pooling ``s``:
        per level two encoder and two decoder convolutions and one pooling.
        """
        depth = self.hparams["depth"]
        return 1 + sum(9 * 2 ** level for level in range(depth)) + 4 * 2 ** depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def widen(net: UNet, width: int, seed: int = 0) -> UNet:
    """A wider copy of ``net`` that computes the same logits (function-preserving growth).

    Every layer keeps the old network's weights in its first channels; the
    added channels get fresh random weights into them and zero weights out
    of them (into the old channels and into the head), so the output is
    unchanged and training can put the new capacity to use from there
    (zero-initialised expansion, as in progressive growing; cf. Net2WiderNet,
    Chen, Goodfellow & Shlens 2016, which copies units instead). Batch-norm
    parameters and running statistics are copied for the old channels.

    Parameters
    ----------
    net : UNet
        The network to widen (left unchanged).
    width : int
        Features at full resolution of the new network, at least ``net``'s.
    seed : int
        Seed of the new channels' random weights.

    Returns
    -------
    UNet
        In the mode ``net`` was in.

    Examples
    --------
    >>> small = UNet(2, width=4, depth=2).eval()
    >>> big = widen(small, 6).eval()
    >>> x = torch.rand(1, 2, 16, 16)
    >>> big.hparams["width"], bool(torch.allclose(small(x), big(x), atol=1e-5))
    (6, True)
    """
    hp = dict(net.hparams)
    if width < hp["width"]:
        raise ValueError(f"widen: width {width} is narrower than the network's {hp['width']}")
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's generator
        torch.manual_seed(seed)
        wide = UNet(hp["in_channels"], hp["n_classes"], width=width, depth=hp["depth"])
    old_f = [hp["width"] * 2 ** i for i in range(hp["depth"] + 1)]
    new_f = [width * 2 ** i for i in range(hp["depth"] + 1)]

    def copy_conv(new, old, rows, cols):
        """Conv2d (out, in, k, k): old outputs from the old inputs only; new outputs random."""
        with torch.no_grad():
            new.weight[rows] = 0
            new.weight[rows[:, None], cols] = old.weight

    def copy_bn(new, old, rows):
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new, name)[rows] = getattr(old, name)
            new.num_batches_tracked.copy_(old.num_batches_tracked)

    def copy_block(new, old, cols, n_old):
        rows = torch.arange(n_old)
        copy_conv(new[0], old[0], rows, cols)
        copy_bn(new[1], old[1], rows)
        copy_conv(new[3], old[3], rows, rows)
        copy_bn(new[4], old[4], rows)

    inputs = torch.arange(hp["in_channels"])
    for level, (new, old) in enumerate(zip(wide.down, net.down)):
        cols = inputs if level == 0 else torch.arange(old_f[level - 1])
        copy_block(new, old, cols, old_f[level])
    for k, level in enumerate(reversed(range(hp["depth"]))):
        # transposed convolution from level + 1 to level: (in, out) = (f[level+1], f[level])
        up_new, up_old = wide.up[k], net.up[k]
        old_in, old_out = torch.arange(old_f[level + 1]), torch.arange(old_f[level])
        with torch.no_grad():
            up_new.weight[:, old_out] = 0
            up_new.weight[old_in[:, None], old_out] = up_old.weight
            up_new.bias[old_out] = up_old.bias
        cols = torch.cat([old_out, new_f[level] + old_out])  # old channels of cat([skip, up])
        copy_block(wide.merge[k], net.merge[k], cols, old_f[level])
    with torch.no_grad():
        wide.head.weight.zero_()
        wide.head.weight[:, : old_f[0]] = net.head.weight
        wide.head.bias.copy_(net.head.bias)
    return wide.train(net.training)


class ModelLoadError(ValueError):
    """A model file that cannot be used (missing, not a fibrecon model, corrupt)."""


def input_channels(kvs, context: int) -> int:
    """Network input channels for ``kvs`` channels and ``context`` neighbours each side."""
    return len(kvs) * (2 * int(context) + 1)


def save_model(path, net: UNet, card) -> None:
    """Write weights (float32), architecture and model card to one ``.pt`` file.

    ``card`` (a dict or :class:`fibrecon.modelcard.ModelCard`) must hold
    ``kvs`` (the kV channels, in input order) and ``context``;
    :mod:`fibrecon.training` adds the training data, settings and validation
    IoU. The card is stored once, as the ``card.json`` entry of the file's zip
    archive (:meth:`~fibrecon.modelcard.ModelCard.read` reads it without
    torch). Written to a temporary name and renamed.
    """
    from fibrecon.files import atomic_path
    from fibrecon.modelcard import ModelCard

    card = card if isinstance(card, ModelCard) else ModelCard(dict(card))
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "hparams": net.hparams, "state_dict": state}, tmp)
        card.write_into(tmp)


def load_model(path, device: str = "cpu") -> tuple[UNet, dict]:
    """Read a model written by :func:`save_model`; eval mode, on ``device``.

    Raises
    ------
    ModelLoadError
        Naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file not found (train one with the train_model "
                             "rule, or set segment.model to the shipped model)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a bad file
        raise ModelLoadError(f"{path}: not a readable model checkpoint ({exc})") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelLoadError(f"{path}: not a fibrecon model (expected format {FORMAT!r})")
    net = UNet(**blob["hparams"])
    try:
        net.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: weights do not fit the architecture {blob['hparams']}: "
                             f"{str(exc).splitlines()[0]}") from exc
    from fibrecon.modelcard import ModelCard, ModelCardError

    try:
        card = ModelCard.read(path).data
    except ModelCardError as exc:
        raise ModelLoadError(str(exc)) from exc
    if input_channels(card["kvs"], card["context"]) != net.hparams["in_channels"]:
        raise ModelLoadError(f"{path}: model card kV list {card['kvs']} with context "
                             f"{card['context']} does not match {net.hparams['in_channels']} "
                             "input channels")
    return net.to(device).eval(), card
