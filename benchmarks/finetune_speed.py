"""How long fine-tuning takes with the default settings: 10 annotated slices of 1024 x 1024.

The slices are the demo's preprocessed 1 + 3 kV slices (``results/preprocessed/demo_p27.tif``
from ``make demo``) mirrored out to 1024 x 1024, annotated with strokes over 10 % of
their pixels drawn from the demo's segmentation (:func:`fibrecon.evaluate.scribbles`);
what is timed is what the ``train_model`` rule runs with ``config/finetune.yaml``:
:func:`fibrecon.training.train_model` from the shipped model, the ``train:``
defaults (500 steps of 16 patches of 192 px), the held-out strip scored
before and after. Content does not change the time.

Run: ``.venv/bin/python benchmarks/finetune_speed.py [--device cpu|cuda]``
(after ``make demo``); writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import write_section  # noqa: E402

from fibrecon import files  # noqa: E402
from fibrecon.evaluate import scribbles  # noqa: E402
from fibrecon.files import Annotation  # noqa: E402
from fibrecon.preprocess import PreprocessParams  # noqa: E402
from fibrecon.training import TrainSettings, annotated_stacks, train_model  # noqa: E402
from fibrecon.unet import load_model  # noqa: E402

MODEL = ROOT / "resources" / "models" / "unet_1kV_3kV.pt"


def mirrored(image: np.ndarray, size: int = 1024) -> np.ndarray:
    """An image (..., y, x) mirrored out to (..., size, size)."""
    ny, nx = image.shape[-2:]
    reps = (-(-size // ny) + 1, -(-size // nx) + 1)
    pad = [(0, 0)] * (image.ndim - 2) + [(0, reps[0] * ny - ny), (0, reps[1] * nx - nx)]
    return np.pad(image, pad, mode="symmetric")[..., :size, :size]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--slices", type=int, default=10)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    pre, _ = files.read_volume(ROOT / "results" / "preprocessed" / "demo_p27.tif")
    seg, _ = files.read_volume(ROOT / "results" / "segmented" / "demo_p27.tif")
    stack = mirrored(pre[: args.slices + 2].astype(np.float32))
    annotations = [Annotation("demo_p27", z, None,
                              scribbles(mirrored(seg[z]), 0.1, np.random.default_rng(z)), "")
                   for z in range(1, args.slices + 1)]
    net, card = load_model(MODEL)
    s = TrainSettings(stacks=0, annotations="annotations", device=args.device)
    t = time.perf_counter()
    user = annotated_stacks(stack, annotations, [0, 1], card["context"])
    _, new = train_model(s, PreprocessParams(), user_stacks=user, init=(net, card),
                         device=args.device, progress_bar=False)
    seconds = time.perf_counter() - t
    where = "2 CPU cores" if args.device == "cpu" else torch.cuda.get_device_name()
    text = (f"{args.slices} annotated slices of 1024 x 1024 (strokes over 10 % of the pixels; "
            f"the demo's slices mirrored out), the `train:` defaults ({s.finetune_steps} steps "
            f"of {s.batch_size} patches of {s.patch_px} px), from the shipped model, on {where}: "
            f"**{seconds / 60:.1f} min** including the held-out strip scored before and after "
            f"(target 15 min on 2 CPU cores). Held-out IoU (the labels are the demo's own "
            f"segmentation here, so near 1: timing only) before "
            f"{ {k: round(v, 3) for k, v in new['validation']['annotations_before'].items()} }, "
            f"after { {k: round(v, 3) for k, v in new['validation']['annotations'].items()} }."
            "\n\nCommand: `.venv/bin/python "
            f"benchmarks/finetune_speed.py{'' if args.device == 'cpu' else ' --device cuda'}` "
            "(after `make demo`).")
    write_section(f"Fine-tuning time ({where})", text)
    print(text)


if __name__ == "__main__":
    main()
