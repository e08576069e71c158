"""The model card of a segmentation network: built once, stored once inside the model file.

A model file written by :func:`fibrecon.unet.save_model` is a PyTorch zip
archive; its card is one more entry of that archive, ``<archive>/card.json``,
so it is read here without torch (the workflow's start-up check, the record)
and it can be read by hand: ``unzip -p model.pt '*/card.json'``. Its checks
(kV channels, tile against the receptive field) live in
:meth:`ModelCard.check`, used by the workflow's start-up check and by the
segment job alike.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["CARD_ENTRY", "ModelCard", "ModelCardError"]

#: Name of the card's entry in the model file's zip archive.
CARD_ENTRY = "card.json"


class ModelCardError(ValueError):
    """A model file whose card is missing or does not fit the configuration; names the file."""


def kvs_can_stand_in(data_kvs, model_kvs) -> bool:
    """Whether a model for ``model_kvs`` may stand in for data at ``data_kvs``: as many
    channels, the data's in rising (positive) kV order, taken channel by channel.

    Examples
    --------
    >>> kvs_can_stand_in([2.0, 5.0], [1.0, 3.0]), kvs_can_stand_in([3.0, 1.0], [1.0, 3.0])
    (True, False)
    """
    data = [float(k) for k in data_kvs]
    return (len(data) == len(model_kvs) and all(k > 0 for k in data)
            and all(b > a for a, b in zip(data, data[1:])))


@dataclass
class ModelCard:
    """What a trained network takes and how it was made.

    Attributes
    ----------
    data : dict
        The card as stored: ``kvs`` (kV channels in input order), ``context``
        (neighbour slices each side), ``receptive_field_px``, ``preprocess``
        (the preprocessing settings of its training data), ``settings``,
        ``training_data``, ``validation`` (IoU), ``calibration`` (``temperature``,
        ``boundary_shift_sd``: :mod:`fibrecon.uncertainty`) and whatever training
        added.
    """

    data: dict = field(default_factory=dict)

    def __post_init__(self):
        missing = {"kvs", "context"} - set(self.data)
        if missing:
            raise ModelCardError(f"model card lacks {sorted(missing)}")
        self.data = json.loads(json.dumps(self.data, default=str))  # plain types only

    @property
    def kvs(self) -> list[float]:
        return [float(k) for k in self.data["kvs"]]

    @property
    def context(self) -> int:
        return int(self.data["context"])

    @property
    def receptive_field_px(self) -> int:
        return int(self.data.get("receptive_field_px", 0))

    @property
    def preprocess(self) -> dict:
        return dict(self.data.get("preprocess", {}))

    @property
    def temperature(self) -> float:
        """Temperature of the calibrated probabilities (card ``calibration: temperature``; 1 if
        the model was never calibrated)."""
        return float(self.data.get("calibration", {}).get("temperature", 1.0))

    @property
    def boundary_shift_sd(self) -> tuple[float, float] | None:
        """Spread (RMS) of the boundary bias over held-out stacks along the two directions of
        :data:`fibrecon.uncertainty.SHIFT_DIRECTIONS`, log-probability units (card
        ``calibration: boundary_shift_sd``); None if not calibrated."""
        value = self.data.get("calibration", {}).get("boundary_shift_sd")
        if value is None:
            return None
        return tuple(float(v) for v in np.broadcast_to(np.asarray(value, float), (2,)))

    @property
    def uncertain_share(self) -> float | None:
        """Share of uncertain voxels on the calibration stacks (card ``calibration:
        uncertain_share``; :func:`fibrecon.uncertainty.domain_widening`); None if not recorded."""
        value = self.data.get("calibration", {}).get("uncertain_share")
        return None if value is None else float(value)

    @property
    def family_scale(self) -> dict:
        """Widening factor of the segmentation sd per metric family (card ``calibration:
        family_scale``; :func:`fibrecon.uncertainty.metric_family`); empty if not calibrated."""
        return {k: float(v) for k, v in self.data.get("calibration", {})
                .get("family_scale", {}).items()}

    @classmethod
    def read(cls, model_path) -> "ModelCard":
        """The card stored in a model file (no torch needed).

        Raises
        ------
        ModelCardError
            The file is missing, not a zip archive, or holds no card; naming it.
        """
        path = Path(model_path)
        if not path.is_file():
            raise ModelCardError(f"{path}: model file not found (set segment: model to the "
                                 "shipped resources/models/unet_1kV_3kV.pt, or to "
                                 "results/models/unet.pt to train one)")
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == CARD_ENTRY]
                if not names:
                    raise ModelCardError(f"{path}: the model file holds no model card "
                                         f"({CARD_ENTRY}); write it with fibrecon.unet.save_model")
                return cls(json.loads(archive.read(names[0])))
        except zipfile.BadZipFile as exc:
            raise ModelCardError(f"{path}: not a fibrecon model file ({exc})") from exc

    def write_into(self, model_path) -> None:
        """Add the card to a model file just written by ``torch.save`` (its zip archive)."""
        with zipfile.ZipFile(model_path, "a") as archive:
            if any(n.rsplit("/", 1)[-1] == CARD_ENTRY for n in archive.namelist()):
                raise ModelCardError(f"{model_path}: already holds a model card")
            prefix = archive.namelist()[0].split("/")[0]
            archive.writestr(f"{prefix}/{CARD_ENTRY}", json.dumps(self.data, indent=1))

    @property
    def pixel_size_range_um(self) -> tuple[float, float] | None:
        """Pixel sizes (x, y, µm) the network was trained for: the card's
        ``pixel_size_range_um``, or its training voxel size +-25 %; None if unknown."""
        if "pixel_size_range_um" in self.data:
            lo, hi = self.data["pixel_size_range_um"]
            return float(lo), float(hi)
        size = self.data.get("settings", {}).get("voxel_size_um")
        return (0.8 * float(size), 1.25 * float(size)) if size else None

    @property
    def working_pixel_um(self) -> float | None:
        """The pixel size (µm) the network works at: the middle of its trained range."""
        trained = self.pixel_size_range_um
        return None if trained is None else float(np.sqrt(trained[0] * trained[1]))

    def working_scale(self, pixel_size_um) -> tuple[float, float] | None:
        """(y, x) factors that bring data coarser than the trained range to the working pixel
        size; None when the data are segmented as they are.

        Finer data are segmented as they are: on one microstructure imaged at 20,
        35 and 50 nm the shipped model (trained at 50 nm) was as accurate or more
        so without resampling, which would throw the finer detail away
        (``benchmarks/voxel_size.py``); coarser data lose accuracy (CBD IoU 0.44
        at 80 nm) and gain it back when enlarged to the working size (0.58).
        """
        trained = self.pixel_size_range_um
        sizes = [float(v) for v in pixel_size_um]
        if trained is None or all(v <= trained[1] for v in sizes):
            return None
        return tuple(v / self.working_pixel_um for v in sizes)

    def pixel_size_note(self, pixel_size_um, model_path) -> str | None:
        """A warning when the data's pixel size (y, x) lies outside the trained range, else None.

        Examples
        --------
        >>> card = ModelCard({"kvs": [1], "context": 0, "settings": {"voxel_size_um": 0.05}})
        >>> card.pixel_size_note((0.05, 0.05), "m.pt") is None
        True
        >>> "outside the 0.04-0.0625 µm" in card.pixel_size_note((0.02, 0.02), "m.pt")
        True
        """
        trained = self.pixel_size_range_um
        if trained is None:
            return None
        lo, hi = trained
        sizes = [float(v) for v in pixel_size_um]
        if all(lo <= v <= hi for v in sizes):
            return None
        coarser = any(v > hi for v in sizes)
        return (f"{model_path}: the data's pixel size {tuple(round(v, 4) for v in sizes)} µm lies "
                f"outside the {lo:.3g}-{hi:.3g} µm the model was trained for: features look "
                f"{self.working_pixel_um / sizes[-1]:.2g}x their trained size"
                + ("; expect lower accuracy unless segment: resample is auto, or fine-tune / "
                   "retrain at this pixel size (train: voxel_size_um)" if coarser else ""))

    def check(self, kvs, tile_px: int, model_path, stand_in: bool = False) -> None:
        """Refuse a model whose kV channels differ from ``kvs`` or a tile below its receptive field.

        With ``stand_in`` (a shipped model chosen by ``segment: model: auto`` for
        kV values it was not trained for, :func:`fibrecon.samples.stand_in_model`)
        as many channels in rising kV order are enough; the segment log warns.

        Raises
        ------
        ModelCardError
            Naming the model file, its kV list and the configured one, or the
            tile and the receptive field.

        Examples
        --------
        >>> card = ModelCard({"kvs": [1, 3], "context": 1, "receptive_field_px": 200})
        >>> card.check([1, 3], 256, "m.pt")
        >>> card.check([3], 256, "m.pt")
        Traceback (most recent call last):
        ...
        fibrecon.modelcard.ModelCardError: m.pt: the model expects kV channels [1.0, 3.0] (in this order), but the configured channels are [3.0]; set segment: channels to [1.0, 3.0] or use a model trained for these channels (segment: model: auto takes the shipped one where there is one; rule train_model trains one)
        """
        want = [float(k) for k in kvs]
        if want != self.kvs and not (stand_in and kvs_can_stand_in(want, self.kvs)):
            raise ModelCardError(
                f"{model_path}: the model expects kV channels {self.kvs} (in this order), but "
                f"the configured channels are {want}; set segment: channels to {self.kvs} or "
                "use a model trained for these channels (segment: model: auto takes the shipped "
                "one where there is one; rule train_model trains one)")
        if tile_px < self.receptive_field_px:
            raise ModelCardError(
                f"segment: tile_px = {tile_px} is smaller than the receptive field of "
                f"{model_path} ({self.receptive_field_px} px); use a tile of at least "
                f"{self.receptive_field_px} px")
