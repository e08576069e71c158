"""Segmentation network: train the shipped model and its comparison variants, measure IoU.

Trains on one seeded set of simulated stacks (``fibrecon.training``):

* ``unet_1kV_3kV``   2D, both kV channels: the shipped model (resources/models/)
* ``unet_1kV``       2D, 1 kV only      } the multi-kV claim: same data, same steps
* ``unet_3kV``       2D, 3 kV only      }
* ``unet_1kV_3kV_w16``  twice the features (capacity vs CPU speed)
* ``unet_1kV_3kV_nodenoise``  trained and tested without the Gaussian denoising
* ``unet_1kV_3kV_ctx1``  2.5D: slices z-1, z, z+1 as extra channels

and evaluates each, with the classical multi-Otsu baseline, on simulated
stacks whose seeds, microstructures and artifact settings were never used in
training ("default": every artifact at strength 1; "strong": 1.5, noise 2.5,
beyond the training range). Per-phase IoU over all test voxels.

Run on a GPU machine (about 6 minutes on one H100) or, slowly, on CPU::

    python benchmarks/segmentation.py train --out DIR [--steps 3000]
    python benchmarks/segmentation.py train --out DIR --init MODEL --seed 2 ...  # continue
    python benchmarks/segmentation.py report DIR/results.json [...]   # the RESULTS.md section

``train`` writes DIR/<model>.pt (with its model card inside) and DIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fibrecon import files  # noqa: E402
from fibrecon.infer import (context_image, predict_probabilities,  # noqa: E402
                            prepare_for_inference, resolve_device)
from fibrecon.preprocess import PreprocessParams, preprocess_stack  # noqa: E402
from fibrecon.segment import segment_multiotsu  # noqa: E402
from fibrecon.simulate import ARTIFACTS, simulate_sample  # noqa: E402
from fibrecon.training import (MICROSTRUCTURE_RANGES, TrainSettings, confusion,  # noqa: E402
                               iou_from_confusion, synthetic_stacks, train_model)
from fibrecon.unet import load_model, save_model  # noqa: E402

KVS = [1.0, 3.0]
VARIANTS = {  # name: (kvs, context, width, preprocessing)
    "unet_1kV_3kV": ([1.0, 3.0], 0, 8, "default"),
    "unet_1kV": ([1.0], 0, 8, "default"),
    "unet_3kV": ([3.0], 0, 8, "default"),
    "unet_1kV_3kV_w16": ([1.0, 3.0], 0, 16, "default"),
    "unet_1kV_3kV_nodenoise": ([1.0, 3.0], 0, 8, "no denoising"),
    "unet_1kV_3kV_ctx1": ([1.0, 3.0], 1, 8, "default"),
    "unet_1kV_3kV_nodenoise_ctx1": ([1.0, 3.0], 1, 8, "no denoising"),
}
PREPROCESSING = {"default": PreprocessParams(denoise="gaussian"),
                 "no denoising": PreprocessParams(denoise="none")}
TEST_SETTINGS = {
    "default": {k: 1.0 for k in ARTIFACTS},
    "strong": {**{k: 1.5 for k in ARTIFACTS}, "noise": 2.5},
}


def iou_cells(c: dict, digits: int = 4) -> str:
    """Markdown cells ``| pore | AM | CBD |`` of a per-phase IoU dict."""
    return "".join(f" {c[k]:.{digits}f} |" for k in ("iou_pore", "iou_am", "iou_cbd"))


def test_stacks(preprocess: PreprocessParams, n_per_setting: int = 3, shape=(24, 256, 256)):
    """Held-out stacks: seeds 90001.., microstructure drawn from a generator never used in training."""
    rng = np.random.default_rng(777)
    out = []
    for setting, artifacts in TEST_SETTINGS.items():
        for i in range(n_per_setting):
            micro = {k: float(rng.uniform(*r)) for k, r in MICROSTRUCTURE_RANGES.items()}
            seed = 90001 + len(out)
            s = simulate_sample(shape, (0.05,) * 3, KVS, seed=seed,
                                artifacts={**artifacts, "drift": 0.0}, **micro)
            out.append({"setting": setting, "seed": seed, "micro": micro,
                        "images": preprocess_stack(s.raw, preprocess), "labels": s.labels})
    return out


def evaluate(net, card, stacks, device, flips: str = "none") -> dict:
    """Per-phase IoU over all voxels of each test setting."""
    net = prepare_for_inference(net, device)
    channels = [KVS.index(k) for k in card["kvs"]]
    multiple = 2 ** card["architecture"]["depth"]
    cms = {}
    for st in stacks:
        cm = cms.setdefault(st["setting"], torch.zeros(3, 3, dtype=torch.long))
        for z in range(len(st["labels"])):
            prob = predict_probabilities(net, context_image(st["images"], z, channels,
                                                            card["context"]),
                                         multiple=multiple, tile=1024, device=device,
                                         flips=flips)
            cm += confusion(torch.from_numpy(prob.argmax(0)), torch.from_numpy(
                st["labels"][z].astype(np.int64)))
    return {k: iou_from_confusion(v) for k, v in cms.items()}


def evaluate_classical(stacks) -> dict:
    cms = {}
    for st in stacks:
        cm = cms.setdefault(st["setting"], torch.zeros(3, 3, dtype=torch.long))
        pred = segment_multiotsu(st["images"])
        cm += confusion(torch.from_numpy(pred.astype(np.int64)),
                        torch.from_numpy(st["labels"].astype(np.int64)))
    return {k: iou_from_confusion(v) for k, v in cms.items()}


def inference_speed(net, device, n_channels: int, size: int = 1024, repeats: int = 4,
                    flips: str = "none") -> float:
    """Mvoxel/s of tiled inference (softmax and blending included) on size x size slices."""
    multiple = net.multiple
    net = prepare_for_inference(net, device)
    img = np.random.default_rng(0).random((n_channels, size, size), dtype=np.float32)
    predict_probabilities(net, img, multiple=multiple, device=device, flips=flips)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        predict_probabilities(net, img, multiple=multiple, device=device, flips=flips)
    return repeats * size * size / (time.perf_counter() - t) / 1e6


def cmd_train(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    base = TrainSettings(kvs=KVS, stacks=args.stacks, steps=args.steps, workers=args.workers,
                         seed=args.seed, learning_rate=args.learning_rate)
    results = {"device": device, "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
               "torch": torch.__version__,
               "settings": base.__dict__ | {"stack_shape": list(base.stack_shape)},
               "classical": {}, "models": {}}
    if args.init:  # what the starting model had seen, for the report's training column
        init_card = load_model(args.init)[1]
        results["init"] = {"path": str(args.init), **{k: init_card["settings"][k] for k in
                                                      ("stacks", "steps", "seed")}}
    sims, tests = {}, {}
    for pre_name in dict.fromkeys(VARIANTS[v][3] for v in args.variants):  # all data first
        pre = PREPROCESSING[pre_name]  # (process pool forks before CUDA is in use)
        sims[pre_name] = synthetic_stacks(base.stacks, base.stack_shape, base.voxel_size_um,
                                          KVS, pre, base.seed, workers=args.workers)
        tests[pre_name] = test_stacks(pre)
        results["classical"][pre_name] = evaluate_classical(tests[pre_name])
        print(f"{time.perf_counter() - t0:.0f} s: classical", pre_name,
              results["classical"][pre_name], flush=True)
    for name in args.variants:
        if time.perf_counter() - t0 > args.budget_s:
            print(f"budget spent: {name} skipped", flush=True)
            continue
        kvs, context, width, pre_name = VARIANTS[name]
        pre = PREPROCESSING[pre_name]
        s = replace(base, kvs=kvs, context=context, width=width)
        init = load_model(args.init) if args.init else None
        net, card = train_model(s, pre, simulated=(sims[pre_name], KVS), device=device,
                                init=init, progress_bar=False)
        card["name"] = name
        save_model(out / f"{name}.pt", net, card)  # the card is inside the .pt
        r = {"preprocessing": pre_name, "train_s": card["seconds"],
             "validation": card["validation"]["simulated"],
             "test": evaluate(net, card, tests[pre_name], device),
             "inference_mvox_s": round(inference_speed(net, device, len(kvs) * (2 * context + 1)),
                                       2),
             "parameters": sum(p.numel() for p in net.parameters())}
        results["models"][name] = r
        print(f"{time.perf_counter() - t0:.0f} s:", name, json.dumps(r), flush=True)
        files.write_json(out / "results.json", results)
    results["total_s"] = round(time.perf_counter() - t0, 1)
    files.write_json(out / "results.json", results)


def cmd_report(args):
    """RESULTS.md section from one or more ``results.json`` (or a list of them in one file)."""
    from results_md import write_section

    runs = []
    for f in args.files:
        r = files.read_json(f)
        runs.extend(r if isinstance(r, list) else [r])
    rows = ["| segmentation | training (stacks, steps) | test setting | IoU pore | IoU AM | "
            "IoU CBD |", "|---|---|---|---|---|---|"]
    speed = ["| model | GPU | training time | inference at 1024x1024 | parameters |",
             "|---|---|---|---|---|"]
    classical_done = set()
    for r in runs:
        for pre_name, per_setting in r["classical"].items():
            for setting, c in per_setting.items():
                if (pre_name, setting) in classical_done:
                    continue
                classical_done.add((pre_name, setting))
                rows.append(f"| classical multi-Otsu ({pre_name} preprocessing) | - | {setting} |"
                            + iou_cells(c))
        st = r["settings"]
        training = f"{st['stacks']}, {st['steps']}"
        if r.get("init"):
            i = r["init"]
            training = (f"{i['stacks']}, {i['steps']} (seed {i['seed']}), continued on "
                        f"{st['stacks']}, {st['steps']} (seed {st['seed']}, peak lr "
                        f"{st['learning_rate']:g})")
        if r.get("note"):
            training += f", {r['note']}"
        for name, m in r["models"].items():
            for setting, c in m["test"].items():
                rows.append(f"| {name} ({m['preprocessing']} preprocessing) | {training} | "
                            f"{setting} |" + iou_cells(c))
            speed.append(f"| {name} ({training}) | {r['gpu'] or 'CPU'} | "
                         f"{m['train_s']:.0f} s | "
                         f"{m['inference_mvox_s']:.1f} Mvoxel/s | {m['parameters']:,} |")
    r0 = runs[0]
    s = r0["settings"]
    gpus = ", ".join(dict.fromkeys(f"{r['gpu'] or 'CPU'} (torch {r['torch']})" for r in runs))
    text = [f"Trained on {gpus} with `fibrecon.training`: simulated stacks of "
            f"{s['stack_shape']} (each with random microstructure and artifact strengths, "
            f"{s['validation_fraction']:.0%} held out), batches of {s['batch_size']} patches of "
            f"{s['patch_px']} px. Test: 3 + 3 stacks of 24x256x256 with unseen seeds and "
            "microstructures, artifacts at strength 1 (default) and 1.5 with noise 2.5 (strong, "
            "beyond the training range). Per-phase IoU over all test voxels (the same test "
            "stacks for every row of one preprocessing):", "", *rows, "",
            "Time and inference speed on the GPU that trained the model (inference: tiled prediction with "
            "blending and softmax of one 1024x1024 slice; 2 CPU cores give about 3.7 Mvoxel/s "
            "for the shipped model, `Segmentation speed on CPU` below):", "", *speed, "",
            "Commands: `python benchmarks/segmentation.py train --out DIR [--steps N --stacks N "
            "--variants ...]` on the GPU machine, then `python benchmarks/segmentation.py report "
            "benchmarks/segmentation_gpu.json` (the runs kept as JSON)."]
    write_section("Segmentation network (issue 5)", "\n".join(text))


def cmd_speed(args):
    """Inference speed of the shipped model on this machine (2 CPU cores in CI)."""
    import os

    from results_md import write_section

    from fibrecon.unet import load_model

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = ["| model | input | device | flip average | inference at 1024x1024 |",
            "|---|---|---|---|---|"]
    for path in args.models:
        net, card = load_model(path)
        n = net.hparams["in_channels"]
        for flips in args.flips:
            mvox = inference_speed(net, device, n, repeats=6, flips=flips)
            where = f"{args.threads} CPU threads" if device == "cpu" else \
                torch.cuda.get_device_name(device)
            rows.append(f"| {Path(path).name} | {len(card['kvs'])} kV x "
                        f"{2 * card['context'] + 1} slices | {where} | {flips} | "
                        f"{mvox:.2f} Mvoxel/s |")
            print(rows[-1], flush=True)
    if device != "cpu":
        return  # the RESULTS section is this machine's CPU figure
    write_section("Segmentation speed on CPU (issue 5)", "\n".join(
        [f"Tiled inference (one 1024x1024 tile, batch norm folded, channels-last, blending and "
         f"softmax included) on this machine ({os.cpu_count()} CPU cores; target >= 2 Mvoxel/s "
         "with 2 channels), with each flip average (`segment.flip_average`):", "", *rows, "",
         "Command: `.venv/bin/python benchmarks/segmentation.py speed` (with the Makefile's "
         "MALLOC_* settings)."]))


def model_and_preprocessing(path):
    """A model file's network, card, and the preprocessing it was trained with."""
    net, card = load_model(path)
    return net, card, PreprocessParams.from_record(card["preprocess"])


def cmd_gap(args):
    """Why the demo's CBD IoU is lower than the test set's: microstructure or pipeline?

    Each demo sample's microstructure (config/demo/config.yaml) simulated again without drift
    (so no alignment or resampling) and segmented directly, at the demo's d50 and at 3 um;
    the pipeline's figure (drift, alignment, preprocessing, volume) is `benchmarks/collect.py`.
    """
    import yaml
    from results_md import write_section

    torch.set_num_threads(args.threads)
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "demo" /
                             "config.yaml").read_text())["demo"]
    net, card, pre = model_and_preprocessing(args.model)
    rows = ["| sample | d50 | IoU pore | IoU AM | IoU CBD |", "|---|---|---|---|---|"]
    for name, kw in config["samples"].items():
        for d50 in (config["d50_um"], 3.0):
            s = simulate_sample(tuple(config["shape"]), tuple(config["voxel_size_um"]), KVS,
                                cbd_fraction=config["cbd_fraction"], d50_um=d50,
                                artifacts={"drift": 0.0}, **kw)
            r = evaluate(net, card, [{"setting": "x", "images": preprocess_stack(s.raw, pre),
                                      "labels": s.labels}], "cpu")["x"]
            rows.append(f"| {name} | {d50:g} um |" + iou_cells(r, 3))
            print(rows[-1], flush=True)
    write_section("Demo vs test-set accuracy (issue 5)", "\n".join(
        ["Each demo sample's microstructure and seed (config/demo/config.yaml, 48x160x160, 50 nm "
         "voxels) simulated without drift, so without alignment and resampling, and segmented "
         f"by {Path(args.model).name} directly; at the demo's d50 and at 3 um. Compare the "
         "pipeline's figures (`benchmarks/collect.py` section above) and the held-out test "
         "stacks (d50 drawn from 1-4 um):", "", *rows, "",
         "Command: `.venv/bin/python benchmarks/segmentation.py gap`."]))


def cmd_evaluate(args):
    """Held-out IoU of shipped models on this machine (what `make demo` users get)."""
    from results_md import write_section

    torch.set_num_threads(args.threads)
    rows = ["| model | preprocessing | flip average | test setting | IoU pore | IoU AM | IoU CBD |",
            "|---|---|---|---|---|---|---|"]
    stacks = {}
    for path in args.models:
        net, card, trained = model_and_preprocessing(path)
        # as trained (every flip average), and with charging removal, which it was not trained on
        for pre_name, pre, flip_list in [
                ("as trained", trained, args.flips),
                ("+ charging removal", replace(trained, charging=True), ["none"])]:
            key = json.dumps(asdict(pre), sort_keys=True)
            if key not in stacks:
                stacks[key] = test_stacks(pre)
            for flips in flip_list:
                for setting, c in evaluate(net, card, stacks[key], "cpu", flips).items():
                    rows.append(f"| {Path(path).name} | {pre_name} | {flips} | {setting} |"
                                + iou_cells(c))
                    print(rows[-1], flush=True)
    write_section("Shipped segmentation model on CPU (issue 5)", "\n".join(
        ["The shipped models evaluated on this machine (CPU, float32) on the same held-out "
         "simulated test stacks as `Segmentation network` above (unseen seeds and "
         "microstructures; targets IoU pore >= 0.93, AM >= 0.97, CBD >= 0.85 at the default "
         "setting). Flip average (`segment.flip_average`): logits averaged over the slice and "
         "its mirror images along x (2 passes) or x, y and both (4 passes). "
         "`+ charging removal`: the test stacks preprocessed with `preprocess.charging: true` "
         "(issue 4), which the model was not trained with:", "", *rows, "",
         "Command: `.venv/bin/python benchmarks/segmentation.py evaluate` (in `make bench`)."]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--device", default="auto")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--stacks", type=int, default=40)
    t.add_argument("--workers", type=int, default=8)
    t.add_argument("--budget-s", type=float, default=480)
    t.add_argument("--seed", type=int, default=1, help="seeds the training stacks and weights")
    t.add_argument("--learning-rate", type=float, default=3e-3)
    t.add_argument("--init", help="model file to continue training from (e.g. the shipped one)")
    t.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    r = sub.add_parser("report")
    r.add_argument("files", nargs="+")
    sp = sub.add_parser("speed")
    sp.add_argument("--models", nargs="+", default=[str(Path(__file__).resolve().parents[1] /
                                                        "resources/models/unet_1kV_3kV.pt")])
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--device", default="cpu", help="cpu, or auto/cuda for a GPU figure "
                                                     "(printed, not written to RESULTS.md)")
    sp.add_argument("--flips", nargs="+", default=["none", "x", "xy"], choices=["none", "x", "xy"])
    ev = sub.add_parser("evaluate")
    ev.add_argument("--models", nargs="+", default=[str(Path(__file__).resolve().parents[1] /
                                                        "resources/models/unet_1kV_3kV.pt")])
    ev.add_argument("--threads", type=int, default=2)
    ev.add_argument("--flips", nargs="+", default=["none", "x", "xy"], choices=["none", "x", "xy"])
    gp = sub.add_parser("gap")
    gp.add_argument("--model", default=str(Path(__file__).resolve().parents[1] /
                                           "resources/models/unet_1kV_3kV.pt"))
    gp.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    {"train": cmd_train, "report": cmd_report, "speed": cmd_speed, "evaluate": cmd_evaluate,
     "gap": cmd_gap}[args.cmd](args)


if __name__ == "__main__":
    main()
