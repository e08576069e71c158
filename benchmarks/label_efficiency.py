"""Label efficiency: per-phase IoU on slices never annotated, against the annotation budget.

Budgets: strokes covering about 0.1 %, 1 % and 10 % of the pixels of 1, 2
and 5 slices (drawn from the true labels by the seeded stroke generator
:func:`fibrecon.evaluate.scribbles`: thin lines inside the phases, not random
pixels), and the same slices fully labelled. Methods, all trained on exactly
the same annotated pixels:

* **U-Net fine-tuned** from the shipped model (``fibrecon.training.train_model``
  with ``init``; the ignore label 255 for what is not annotated; grey-level
  augmentation at ``train.finetune_grey_jitter`` (``--grey-jitter``); ``--steps``
  steps of ``--batch`` patches of 192 px, or the slice's size: the workflow's
  defaults, 500 of 16, take 4 minutes per model on 2 CPU cores, so ``make
  bench`` runs 200 of 8);
* **U-Net from scratch**, the same steps from random weights;
* **random forest** (scikit-learn, 100 trees) on ilastik-style multiscale
  features (skimage.feature.multiscale_basic_features, sigma 1-16) of the
  annotated pixels (at most 60 000, seeded), what ilastik's pixel
  classification does.

Domains:

(a) ``nanoct``: the real nano-CT slices of ``../shared/data/segmentpy_nmc_nanoct``
    (Su et al., npj Comput. Mater. 2022, Apache-2.0; single channel; the
    shipped 1 kV model is the starting point). Annotated slices come from
    1, 200, 103, 510, 929 (the first 1, 2 or 5); test slices are 100, 300, 360,
    738, 1502, 1503.
(b) ``foreign``: a real-geometry label volume (MATBOX NMC, ``nmc_label_volumes``)
    rendered at 1 and 3 kV by the separately written imaging model of
    ``benchmarks/foreign.py`` (its own grey levels, shine-through, noise;
    no drift), preprocessed as the workflow does; the shipped 1 + 3 kV model
    (context 1) is the starting point. Annotated slices among the first 60,
    test slices are the last 40 of 140 (never the same, never neighbours).

Run: ``.venv/bin/python benchmarks/label_efficiency.py [--domain nanoct|foreign|both]
[--steps 200 --batch 8]`` (CPU; about 20 minutes per domain at those settings, 95 at the
fine-tuning defaults of 500 steps of 16 patches); writes its sections of
benchmarks/RESULTS.md and ``benchmarks/label_efficiency_<domain>.json``.

Probes that write nothing (RESULTS row "what a network of this design reaches"):
``--widen W`` (the starting model widened to W features, same logits, and the
scratch U-Net at W), ``--domain foreign --pool 96 --budgets 96:full`` (an
in-domain ceiling with plenty of labels), ``--fine`` (that render at half its
pixel size), ``--no-scratch``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import write_section  # noqa: E402

from fibrecon import NOT_ANNOTATED  # noqa: E402
from fibrecon.evaluate import confusion_counts, iou_from_confusion, scribbles  # noqa: E402
from fibrecon.infer import context_image, predict_probabilities, prepare_for_inference  # noqa: E402
from fibrecon.preprocess import PreprocessParams, normalize_percentiles, preprocess_stack  # noqa: E402
from fibrecon.files import Annotation  # noqa: E402
from fibrecon.training import TrainSettings, annotated_stacks, train_model  # noqa: E402
from fibrecon.unet import UNet, load_model, widen  # noqa: E402

MODELS = ROOT / "resources" / "models"
BUDGETS = [(n, f) for n in (1, 2, 5) for f in (0.001, 0.01, 0.1, None)]  # None = fully labelled
PHASE_NAMES = ("pore", "am", "cbd")


def nanoct():
    """Domain (a): (name, model, pool of (stack, z, labels), test list of (stack, z, labels))."""
    import tifffile

    folder = ROOT.parent / "shared" / "data" / "segmentpy_nmc_nanoct"
    if not folder.is_dir():
        folder = Path("/work/shared/data/segmentpy_nmc_nanoct")
    label_map = np.array([1, 2, 0], np.uint8)  # source 0 NMC, 1 CBD, 2 pore

    def load(name):
        img = normalize_percentiles(tifffile.imread(folder / "images" / f"{name}.tif")
                                    .astype(np.float32))
        lab = label_map[tifffile.imread(folder / "labels" / f"{name}_label.tif")]
        return img[None, None].astype(np.float32), 0, lab  # a one-slice, one-channel stack

    pool = [load(n) for n in ("1", "200", "103", "510", "929")]
    test = [load(n) for n in ("100", "300", "360", "738", "1502", "1503")]
    return "real nano-CT slices (segmentpy_nmc_nanoct)", MODELS / "unet_1kV.pt", pool, test


def foreign(pool_slices: int | None = None, fine: bool = False):
    """Domain (b): a MATBOX volume rendered by benchmarks/foreign.py at 1 + 3 kV.

    ``pool_slices``: the first that many slices (at most 96, 4 slices short of
    the first test slice) as the pool instead of the 5 spread ones, for an
    in-domain ceiling with plenty of labels (``--pool``). ``fine``: a 124²
    window imaged at half its pixel size (each voxel 2 x 2 pixels, as
    ``cross_domain.py``'s ``foreign_fine``), where the CBD films are 2-4 px
    thick instead of 1-2 (``--fine``).
    """
    from foreign import label_volume, render

    vol = label_volume("matbox_nmc1_251x301x301.tif")[:160, :248, :248]
    if fine:
        vol = np.repeat(np.repeat(vol[:, :124, :124], 2, 1), 2, 2)
    s = render(vol, rng=np.random.default_rng(11), n_slices=140, drift_step_px=0.0, shine=0.6)
    stack = preprocess_stack(s.raw, PreprocessParams()).astype(np.float32)
    pool = [(stack, z, s.labels[z]) for z in
            ((5, 25, 45, 15, 55) if pool_slices is None else range(min(pool_slices, 96)))]
    test = [(stack, z, s.labels[z]) for z in range(100, 140, 4)]
    return ("MATBOX NMC volume rendered by benchmarks/foreign.py (1 + 3 kV)",
            MODELS / "unet_1kV_3kV.pt", pool, test)


def budget_annotations(pool, n, fraction, seed):
    """The first ``n`` pool slices, each as strokes of ``fraction`` of its pixels (or all)."""
    out = []
    for k, (stack, z, lab) in enumerate(pool[:n]):
        sparse = lab.astype(np.uint8) if fraction is None else \
            scribbles(lab, fraction, np.random.default_rng([seed, k]))
        out.append((stack, z, sparse))
    return out


def unet_iou(net, card, test):
    multiple = net.multiple
    net = prepare_for_inference(net)
    cm = np.zeros((3, 3), np.int64)
    for stack, z, lab in test:
        x = context_image(stack, z, range(stack.shape[1]), card["context"])
        pred = predict_probabilities(net, x, multiple=multiple, tile=1024).argmax(0)
        cm += confusion_counts(pred, lab)
    return iou_from_confusion(cm)


def features(image):
    from skimage.feature import multiscale_basic_features

    return np.concatenate([multiscale_basic_features(c, sigma_min=1, sigma_max=16)
                           for c in image], axis=-1)


def forest_iou(annotations, test, seed=0):
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for stack, z, sparse in annotations:
        f = features(stack[z])
        idx = np.flatnonzero(sparse.ravel() != NOT_ANNOTATED)
        xs.append(f.reshape(-1, f.shape[-1])[idx])
        ys.append(sparse.ravel()[idx])
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(y) > 60_000:
        keep = rng.choice(len(y), 60_000, replace=False)
        x, y = x[keep], y[keep]
    rf = RandomForestClassifier(100, n_jobs=2, random_state=seed).fit(x, y)
    cm = np.zeros((3, 3), np.int64)
    for stack, z, lab in test:
        f = features(stack[z])
        cm += confusion_counts(rf.predict(f.reshape(-1, f.shape[-1])).reshape(lab.shape), lab)
    return iou_from_confusion(cm)


def is_record_run(budgets, init_model, grey_jitter, widen_to=None, pool_slices=None,
                  fine=False, scratch=True) -> bool:
    """Whether a run is the record's (every budget, the shipped start, the default jitter)."""
    return (budgets == BUDGETS and not init_model and not widen_to and not pool_slices
            and not fine and scratch
            and grey_jitter == TrainSettings.finetune_grey_jitter)


def run(domain: str, steps: int, seed: int = 0, budgets=BUDGETS, batch: int = 16,
        learning_rate: float = TrainSettings.learning_rate, init_model=None,
        grey_jitter: float = TrainSettings.finetune_grey_jitter, widen_to: int | None = None,
        pool_slices: int | None = None, fine: bool = False, scratch: bool = True):
    title, model, pool, test = (foreign(pool_slices, fine) if domain == "foreign"
                                else nanoct())
    if init_model:  # another starting model: a one-channel image goes to each of its kV inputs
        model = Path(init_model)
        n = len(load_model(model)[1]["kvs"])
        pool, test = ([(np.repeat(st, n // st.shape[1], 1) if st.shape[1] < n else st, z, lab)
                       for st, z, lab in part] for part in (pool, test))
    base, card = load_model(model)

    def start_model():  # the domain's model, or it widened (same logits, more channels)
        net = load_model(model)[0]
        return (widen(net, widen_to) if widen_to else net), card

    rows = []
    t0 = time.perf_counter()
    for n, fraction in budgets:
        if n > len(pool):
            raise SystemExit(f"budget of {n} slices, but the {domain} pool holds {len(pool)} "
                             "(--pool N for more on the foreign domain)")
        ann = budget_annotations(pool, n, fraction, seed)
        annotated = sum(int((s != NOT_ANNOTATED).sum()) for _, _, s in ann)
        pixels = sum(s.size for _, _, s in ann)
        row = {"slices": n, "budget": "full" if fraction is None else f"{fraction:.1%}",
               "annotated_pixels": annotated, "annotated_share": annotated / pixels}
        t = time.perf_counter()
        row["forest"] = forest_iou(ann, test, seed)
        row["forest_s"] = time.perf_counter() - t
        stacks = [st for stack, z, sparse in ann
                  for st in annotated_stacks(stack, [Annotation(domain, z, None, sparse, "")],
                                             range(stack.shape[1]), card["context"])]
        s = TrainSettings(kvs=card["kvs"], context=card["context"], stacks=0,
                          finetune_steps=steps, batch_size=batch, validation_fraction=0.0,
                          seed=seed + 1, learning_rate=learning_rate,
                          finetune_grey_jitter=grey_jitter)
        for name, init in (("finetuned", start_model),
                           ("scratch", lambda: None))[:2 if scratch else 1]:
            t = time.perf_counter()
            torch.manual_seed(seed)
            start = init()
            if start is None:  # random weights of the shipped architecture (or --widen's width)
                arch = card["architecture"]
                start = (UNet(arch["in_channels"], width=widen_to or arch["width"],
                              depth=arch["depth"]), card)
            net, _ = train_model(s, PreprocessParams.from_record(card["preprocess"]),
                                 user_stacks=stacks, init=start, device="cpu",
                                 progress_bar=False)
            row[name] = unet_iou(net, card, test)
            row[f"{name}_s"] = time.perf_counter() - t
        rows.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                          if not isinstance(v, dict)}),
              {m: [round(row[m][f"iou_{p}"], 3) for p in PHASE_NAMES]
               for m in ("finetuned", "scratch", "forest") if m in row}, flush=True)
    elapsed = time.perf_counter() - t0
    shipped = unet_iou(base, card, test)
    if is_record_run(budgets, init_model, grey_jitter, widen_to, pool_slices, fine, scratch):
        (ROOT / "benchmarks" / f"label_efficiency_{domain}.json").write_text(
            json.dumps({"domain": title, "steps": steps, "grey_jitter": grey_jitter,
                        "shipped_zero_shot": shipped,
                        "rows": rows}, indent=1))
    return title, shipped, rows, elapsed


def section(domain, steps, batch, title, shipped, rows, elapsed):
    def trio(r):
        return " / ".join(f"{r[f'iou_{p}']:.3f}" for p in PHASE_NAMES)

    lines = [f"{title}. Test slices never annotated; IoU pore / AM / CBD over all their pixels. "
             f"U-Nets: {steps} steps of {batch} patches of up to 192 px (the workflow's "
             "fine-tuning defaults are 500 steps of 16), grey-level augmentation at "
             f"`train.finetune_grey_jitter` = {TrainSettings.finetune_grey_jitter} (the default), "
             "loss on annotated pixels only; forest and "
             "U-Nets see the same annotated pixels. The shipped model without fine-tuning: "
             f"{trio(shipped)}.", "",
             "| annotated | pixels | U-Net fine-tuned | U-Net from scratch | random forest | "
             "fine-tuned - forest (worst phase) | mean IoU: fine-tuned - forest |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    worst = []
    for r in rows:
        diff = [r["finetuned"][f"iou_{p}"] - r["forest"][f"iou_{p}"] for p in PHASE_NAMES]
        worst.append(min(diff))
        lines.append(f"| {r['slices']} slice(s), {r['budget']} | {r['annotated_share']:.2%} "
                     f"| {trio(r['finetuned'])} | {trio(r['scratch'])} | {trio(r['forest'])} "
                     f"| {min(diff):+.3f} | {np.mean(diff):+.3f} |")
    met = sum(w >= 0 for w in worst)
    full5 = next(r for r in rows if r["slices"] == 5 and r["budget"] == "full")
    gain5 = np.mean([full5["finetuned"][f"iou_{p}"] - full5["forest"][f"iou_{p}"]
                     for p in PHASE_NAMES])
    lines += ["", f"Fine-tuned U-Net at or above the forest on every phase: {met} of {len(rows)} "
              f"budgets (worst phase difference {min(worst):+.3f}); with 5 fully labelled "
              f"slices its mean IoU is {gain5:+.3f} from the forest's (target +0.05 on the "
              "nano-CT slices).", "",
              f"Command: `.venv/bin/python benchmarks/label_efficiency.py --domain {domain}"
              f" --steps {steps} --batch {batch}` ({elapsed / 60:.0f} min on 2 CPU "
              "cores; needs scikit-learn, benchmarks/requirements.txt)."]
    write_section(f"Label efficiency: {domain}", "\n".join(lines))
    print("\n".join(lines))


def ceiling(domain: str):
    """Print the forest trained on the full pool slices and on the test slices (in-sample)."""
    _, _, pool, test = {"nanoct": nanoct, "foreign": foreign}[domain]()
    for name, annotated in (("pool slices (the benchmark's 5 full)", pool),
                            ("the test slices themselves (in-sample)", test)):
        iou = forest_iou([(st, z, lab.astype(np.uint8)) for st, z, lab in annotated], test)
        print(f"{domain}: forest trained on {name}: "
              + " / ".join(f"{iou[f'iou_{p}']:.3f}" for p in PHASE_NAMES)
              + f", mean {np.mean([iou[f'iou_{p}'] for p in PHASE_NAMES]):.3f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domain", choices=("nanoct", "foreign", "both"), default="both")
    ap.add_argument("--steps", type=int, default=TrainSettings.finetune_steps)
    ap.add_argument("--batch", type=int, default=TrainSettings.batch_size)
    ap.add_argument("--learning-rate", type=float, default=TrainSettings.learning_rate,
                    help="train.learning_rate (fine-tuning runs at a third of it)")
    ap.add_argument("--init-model", help="start the fine-tuning from this model instead of "
                    "the shipped one of the domain (no RESULTS.md section is written then)")
    ap.add_argument("--grey-jitter", type=float, default=TrainSettings.finetune_grey_jitter,
                    help="train.finetune_grey_jitter for both U-Nets (no RESULTS.md section is "
                         "written unless it is the default)")
    ap.add_argument("--widen", type=int, default=None, metavar="WIDTH",
                    help="fine-tune the domain's model widened to WIDTH features (same logits at "
                         "the start, fibrecon.unet.widen), and train the scratch U-Net at that "
                         "width: does capacity limit the in-domain IoU? (no RESULTS.md section)")
    ap.add_argument("--pool", type=int, default=None, metavar="N",
                    help="foreign domain: the first N slices (at most 96) as the pool, e.g. "
                         "--pool 96 --budgets 96:full for an in-domain ceiling with plenty of "
                         "labels (no RESULTS.md section)")
    ap.add_argument("--fine", action="store_true",
                    help="foreign domain imaged at half its pixel size (no RESULTS.md section)")
    ap.add_argument("--no-scratch", action="store_true",
                    help="leave out the U-Net from scratch (no RESULTS.md section)")
    ap.add_argument("--budgets", help="a subset to try, e.g. '5:full,1:0.01' (no RESULTS.md "
                    "section is written then)")
    ap.add_argument("--ceiling", action="store_true",
                    help="only the forest on all pool slices against a forest trained on the "
                         "test slices themselves (in-sample): how far the labels carry from "
                         "slice to slice")
    args = ap.parse_args(argv)
    try:  # the peer method; checked before minutes of fine-tuning
        import sklearn  # noqa: F401
    except ImportError:
        raise SystemExit("benchmarks/label_efficiency.py needs scikit-learn (the random forest "
                         "it is measured against): .venv/bin/pip install -c requirements.txt "
                         "-r benchmarks/requirements.txt (make bench does)") from None
    if (args.pool or args.fine) and args.domain != "foreign":
        ap.error("--pool and --fine are options of --domain foreign")
    torch.set_num_threads(2)
    if args.ceiling:
        for domain in (("nanoct", "foreign") if args.domain == "both" else (args.domain,)):
            ceiling(domain)
        return
    budgets = BUDGETS
    if args.budgets:
        budgets = [(int(n), None if f == "full" else float(f))
                   for n, f in (b.split(":") for b in args.budgets.split(","))]
    for domain in (("nanoct", "foreign") if args.domain == "both" else (args.domain,)):
        result = run(domain, args.steps, budgets=budgets, batch=args.batch,
                     learning_rate=args.learning_rate, init_model=args.init_model,
                     grey_jitter=args.grey_jitter, widen_to=args.widen, pool_slices=args.pool,
                     fine=args.fine, scratch=not args.no_scratch)
        if is_record_run(budgets, args.init_model, args.grey_jitter, args.widen, args.pool,
                         args.fine, not args.no_scratch):
            section(domain, args.steps, args.batch, *result)


if __name__ == "__main__":
    main()
