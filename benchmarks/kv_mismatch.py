"""The shipped models on stacks imaged at kV values they were not trained for.

``segment: model: auto`` lets the shipped model with as many channels stand in
for kV values none was trained for (:func:`fibrecon.samples.stand_in_model`).
This measures what that costs: per kV setting, per-phase IoU of the stand-in
(the trained kV rows are the reference) beside multi-Otsu (the classical
method, Gaussian denoising) on the same stacks.

Stacks, never used in training:

* fibrecon's simulator, whose kV model (information depth, blur, dose,
  charging: :func:`fibrecon.simulate.kv_response`) renders each kV: 3 held-out
  microstructures (the ranges of ``benchmarks/segmentation.py``), 24 x 256²,
  seeds 95001-95003, no drift;
* the inpainter and TauFactor label volumes rendered by the separately written
  imaging model ``benchmarks/foreign.py`` at the same kV (its own shine-through
  depth per kV), 24 x 128² and 24 x 256².

Run: ``.venv/bin/python benchmarks/kv_mismatch.py`` (about 4 minutes on 2 cores);
writes the section "Shipped models at other kV" of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import foreign  # noqa: E402
from results_md import write_section  # noqa: E402
from segmentation import MICROSTRUCTURE_RANGES  # noqa: E402

from fibrecon.evaluate import confusion_counts, iou_from_confusion  # noqa: E402
from fibrecon.infer import context_image, predict_probabilities, prepare_for_inference  # noqa: E402
from fibrecon.preprocess import PreprocessParams, preprocess_stack  # noqa: E402
from fibrecon.samples import SHIPPED_MODELS, auto_model  # noqa: E402
from fibrecon.segment import segment_multiotsu  # noqa: E402
from fibrecon.simulate import simulate_sample  # noqa: E402
from fibrecon.unet import load_model  # noqa: E402

SETTINGS = [(1.0,), (1.5,), (2.0,), (3.0,), (5.0,),
            (1.0, 3.0), (1.5, 3.0), (1.0, 5.0), (2.0, 3.0), (2.0, 5.0)]
PHASES = ("pore", "am", "cbd")


def unet_confusion(net, card, images, labels):
    model = prepare_for_inference(net, "cpu")
    cm = np.zeros((3, 3), np.int64)
    for z in range(len(labels)):
        x = context_image(images, z, range(images.shape[1]), card["context"])
        pred = predict_probabilities(model, x, multiple=net.multiple, tile=1024,
                                     device="cpu").argmax(0)
        cm += confusion_counts(pred, labels[z])
    return cm


def stacks(kvs):
    """(domain, raw, labels) of both domains imaged at ``kvs``."""
    rng = np.random.default_rng(777)
    micros = [{k: float(rng.uniform(*r)) for k, r in MICROSTRUCTURE_RANGES.items()}
              for _ in range(3)]
    for i, micro in enumerate(micros):
        s = simulate_sample((24, 256, 256), (0.05,) * 3, kvs, seed=95001 + i,
                            artifacts={"drift": 0.0}, **micro)
        yield "simulator", s.raw, s.labels
    for i, name in enumerate(["inpainter_nmc_128cube.tif", "taufactor_electrode_256cube.tif"]):
        vol = np.ascontiguousarray(foreign.label_volume(name)[:48])
        st = foreign.render(vol, kvs, rng=np.random.default_rng(500 + i), n_slices=24,
                            drift_step_px=0.0, shine=0.45)
        yield "foreign", st.raw, st.labels


def iou_text(cm) -> str:
    iou = iou_from_confusion(cm)
    return " / ".join(f"{iou[f'iou_{p}']:.3f}" for p in PHASES)


def main():
    torch.set_num_threads(2)
    otsu_pre = PreprocessParams(denoise="gaussian")
    rows = []
    for kvs in SETTINGS:
        t = time.perf_counter()
        path = auto_model(kvs, ROOT)
        net, card = load_model(path)
        pre = PreprocessParams.from_record(card["preprocess"])
        cms = {}
        for domain, raw, labels in stacks(kvs):
            for method, cm in (
                    ("unet", unet_confusion(net, card, preprocess_stack(raw, pre), labels)),
                    ("otsu", confusion_counts(segment_multiotsu(
                        preprocess_stack(raw, otsu_pre).astype(np.float32)), labels))):
                cms[(domain, method)] = cms.get((domain, method), 0) + cm
        name = Path(path).name
        rows.append((kvs, name, card["kvs"], cms))
        print(kvs, name, {k: iou_text(v) for k, v in cms.items()},
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    lines = [
        "Per-phase IoU (pore / AM / CBD) over every voxel, stacks imaged at each kV setting: "
        "fibrecon's simulator (3 held-out microstructures, 24 x 256², its kV model) and the "
        "inpainter and TauFactor volumes rendered by `benchmarks/foreign.py` (24 slices); "
        "the model `segment: model: auto` takes (trained kV in brackets; other kV: the shipped "
        f"model with as many channels stands in, `{SHIPPED_MODELS}`), beside multi-Otsu on the "
        "same stacks. 2 cores, `.venv/bin/python benchmarks/kv_mismatch.py`.", "",
        "| data kV | model (trained kV) | simulator: model | simulator: multi-Otsu | foreign "
        "render: model | foreign render: multi-Otsu |", "| --- | --- | --- | --- | --- | --- |"]
    for kvs, name, trained, cms in rows:
        lines.append(f"| {' + '.join(f'{k:g}' for k in kvs)} | {name} "
                     f"({' + '.join(f'{float(k):g}' for k in trained)}) | "
                     f"{iou_text(cms[('simulator', 'unet')])} | "
                     f"{iou_text(cms[('simulator', 'otsu')])} | "
                     f"{iou_text(cms[('foreign', 'unet')])} | "
                     f"{iou_text(cms[('foreign', 'otsu')])} |")
    ref = {len(kvs): iou_from_confusion(cms[("simulator", "unet")])
           for kvs, _, trained, cms in rows if [float(k) for k in trained] == list(kvs)}
    worst = {p: min(iou_from_confusion(cms[("simulator", "unet")])[f"iou_{p}"]
                    - ref[len(kvs)][f"iou_{p}"] for kvs, _, _, cms in rows) for p in PHASES}
    beats = sum(all(iou_from_confusion(cms[(d, "unet")])[f"iou_{p}"]
                    > iou_from_confusion(cms[(d, "otsu")])[f"iou_{p}"] for p in ("pore", "am"))
                for _, _, _, cms in rows for d in ("simulator", "foreign"))
    lines += ["", "Largest loss of the stand-in against the trained kV on the simulator: "
              + ", ".join(f"{p} {worst[p]:+.3f}" for p in PHASES)
              + f". The model is above multi-Otsu in pore and AM in {beats} of "
              f"{2 * len(rows)} cases (setting x domain)."]
    write_section("Shipped models at other kV", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
