"""A single-kV stack through the 1 kV model: with its training's denoising and without.

Run: ``.venv/bin/python benchmarks/single_kv.py`` (about 1.5 minutes on 2 cores).
Prints per-phase IoU on held-out simulated 1 kV stacks (24 x 256 x 256, seeds 21
and 22, drift corrected with the truth) preprocessed as ``preprocess.denoise:
auto`` gives them (the model card's Gaussian filter) and with ``none`` (the
default before ``auto``), segmented by ``resources/models/unet_1kV.pt`` as the
segment job does (no flips).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fibrecon.align import apply_drift  # noqa: E402
from fibrecon.evaluate import confusion_counts, iou_from_confusion  # noqa: E402
from fibrecon.infer import context_image, predict_probabilities, prepare_for_inference  # noqa: E402
from fibrecon.preprocess import PreprocessParams, preprocess_stack  # noqa: E402
from fibrecon.samples import resolve_preprocess  # noqa: E402
from fibrecon.simulate import simulate_sample  # noqa: E402
from fibrecon.unet import load_model  # noqa: E402

MODEL = ROOT / "resources" / "models" / "unet_1kV.pt"


def main():
    torch.set_num_threads(2)
    net, card = load_model(MODEL)
    multiple = net.multiple
    net = prepare_for_inference(net)
    auto = resolve_preprocess({**PreprocessParams().to_config(), "denoise": "auto"}, "unet",
                              card["preprocess"])
    for seed in (21, 22):
        s = simulate_sample((24, 256, 256), kvs=(1.0,), porosity=0.33, seed=seed)
        raw, window = apply_drift(s.raw.astype(np.float32), s.drift_px)
        truth = s.labels[:, window[0], window[1]]
        for name, params in (("auto (" + auto["denoise"] + ")", PreprocessParams.from_config(auto)),
                             ("none", PreprocessParams(denoise="none"))):
            pre = preprocess_stack(raw, params).astype(np.float32)
            cm = np.zeros((3, 3), np.int64)
            for z in range(len(pre)):
                x = context_image(pre, z, [0], card["context"])
                cm += confusion_counts(predict_probabilities(net, x, multiple=multiple,
                                                             tile=1024).argmax(0), truth[z])
            iou = iou_from_confusion(cm)
            print(f"seed {seed}, denoise {name}: IoU pore / AM / CBD "
                  + " / ".join(f"{iou[k]:.3f}" for k in ("iou_pore", "iou_am", "iou_cbd")),
                  flush=True)


if __name__ == "__main__":
    main()
