"""Real labelled data: fine-tuned U-Net vs a random-forest pixel classifier.

Data: ../shared/data/segmentpy_nmc_nanoct (12 real nano-CT slices of NMC
cathodes with 3-phase labels; Su et al., npj Comput. Mater. 2022,
doi:10.1038/s41524-022-00709-7; Apache-2.0). Labels mapped to fibrecon's
0 pore, 1 AM, 2 CBD. Every image is stretched to its 1st-99th percentiles.

Six slices train, the other six test (never the same slice; each source
volume on both sides):

* U-Net fine-tuned: the shipped single-channel model (resources/models/unet_1kV.pt,
  trained on simulated 1 kV FIB-SEM stacks) fine-tuned on the training slices with
  ``fibrecon.training.train_model`` (a fifth of them held out for validation);
* U-Net from scratch: the same steps from random weights;
* random forest (scikit-learn, 100 trees) on ilastik-style multiscale features
  (skimage.feature.multiscale_basic_features: intensity, edges, texture at
  sigma 1-16), trained on 60 000 random pixels of the same training slices.

Run: ``.venv/bin/python benchmarks/real_segmentation.py [--steps 600]`` (CPU,
about 8 minutes); writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import write_section  # noqa: E402

from fibrecon.infer import (predict_probabilities, prepare_for_inference,  # noqa: E402
                            resolve_device)
from fibrecon.preprocess import PreprocessParams, normalize_percentiles  # noqa: E402
from fibrecon.training import TrainSettings, confusion, iou_from_confusion, train_model  # noqa: E402
from fibrecon.unet import load_model  # noqa: E402

DATA = Path(os.environ.get("FIBRECON_SHARED_DATA", ROOT.parent / "shared" / "data"))
FOLDER = DATA / "segmentpy_nmc_nanoct"
TRAIN = ["1", "200", "103", "510", "929", "1501"]
TEST = ["100", "300", "360", "738", "1502", "1503"]
LABEL_MAP = np.array([1, 2, 0], np.uint8)  # source 0 NMC, 1 CBD, 2 pore


def load(name):
    img = tifffile.imread(FOLDER / "images" / f"{name}.tif").astype(np.float32)
    lab = LABEL_MAP[tifffile.imread(FOLDER / "labels" / f"{name}_label.tif")]
    return normalize_percentiles(img), lab


def unet_scores(net, images, labels, device="cpu"):
    multiple = net.multiple
    net = prepare_for_inference(net, device)
    cm = torch.zeros(3, 3, dtype=torch.long)
    for img, lab in zip(images, labels):
        pred = predict_probabilities(net, img[None], multiple=multiple, tile=1024,
                                     device=device).argmax(0)
        cm += confusion(torch.from_numpy(pred), torch.from_numpy(lab.astype(np.int64)))
    return iou_from_confusion(cm)


def forest_scores(train, test, seed=0):
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    def feats(img):
        return multiscale_basic_features(img, sigma_min=1, sigma_max=16)

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    per = 60_000 // len(train)
    for img, lab in train:
        f = feats(img).reshape(-1, feats(img[:8, :8]).shape[-1])
        idx = rng.choice(lab.size, per, replace=False)
        xs.append(f[idx])
        ys.append(lab.ravel()[idx])
    t = time.perf_counter()
    rf = RandomForestClassifier(100, n_jobs=2, random_state=seed).fit(np.concatenate(xs),
                                                                       np.concatenate(ys))
    cm = torch.zeros(3, 3, dtype=torch.long)
    for img, lab in test:
        f = feats(img)
        pred = rf.predict(f.reshape(-1, f.shape[-1])).reshape(lab.shape)
        cm += confusion(torch.from_numpy(pred.astype(np.int64)),
                        torch.from_numpy(lab.astype(np.int64)))
    return iou_from_confusion(cm), time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--device", default="cpu", help="cpu (the RESULTS.md section of make "
                    "bench) or auto/cuda (a section of its own, for longer training)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    device = resolve_device(args.device)
    where = "2 CPU cores" if device == "cpu" else torch.cuda.get_device_name(device)
    train = [load(n) for n in TRAIN]
    test = [load(n) for n in TEST]
    user = [(img[None, None], lab[None]) for img, lab in train]
    rows = []
    if device == "cpu":  # (the forest is a CPU method: the GPU section refers to this one)
        r_forest, t_forest = forest_scores(train, test)
        rows.append(("random forest, multiscale features (scikit-learn)", r_forest, t_forest))
        print(rows[-1], flush=True)
    base, card = load_model(ROOT / "resources" / "models" / "unet_1kV.pt")
    s = TrainSettings(kvs=card["kvs"], context=0, stacks=0, finetune_steps=args.steps,
                      batch_size=8, patch_px=128, learning_rate=3e-3, seed=1)
    for name, init in [("U-Net fine-tuned from the shipped 1 kV model", (base, card)),
                       ("U-Net from scratch, same steps", None)]:  # width 8, depth 4
        t = time.perf_counter()
        net, c = train_model(s, PreprocessParams(denoise="gaussian"), user_stacks=user, init=init, device=device,
                             progress_bar=False)
        rows.append((name, unet_scores(net, [i for i, _ in test], [lab for _, lab in test],
                                       device), time.perf_counter() - t))
        print(rows[-1], flush=True)
    table = [f"| method | IoU pore | IoU AM | IoU CBD | training time ({where}) |",
             "|---|---|---|---|---|"]
    for name, r, sec in rows:
        table.append(f"| {name} | {r['iou_pore']:.3f} | {r['iou_am']:.3f} | {r['iou_cbd']:.3f} "
                     f"| {sec:.0f} s |")
    text = ["Real nano-CT slices with labels (`../shared/data/segmentpy_nmc_nanoct`, Su et al. "
            "2022, Apache-2.0). Train slices " + ", ".join(TRAIN) + "; test slices "
            + ", ".join(TEST) + f" (never the same slice). U-Nets: {args.steps} steps of 8 "
            "patches of 128 px, one training slice held out for validation. Per-phase IoU over "
            "all test pixels" + ("" if device == "cpu" else " (the random forest on the same "
                                 "slices: section above)") + ":", "", *table, "",
            "Command: `.venv/bin/python benchmarks/real_segmentation.py"
            + ("" if device == "cpu" else f" --device cuda --steps {args.steps}")
            + "` (needs scikit-learn, benchmarks/requirements.txt)."]
    write_section("Segmentation on real labelled slices" + ("" if device == "cpu" else
                                                            ", longer training on a GPU")
                  + " (issue 5)", "\n".join(text))


if __name__ == "__main__":
    main()
