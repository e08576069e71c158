"""Draw docs/realism.png: a simulated FIB-SEM slice beside a real SEM image of a cathode.

Run from the repository root: ``.venv/bin/python docs/realism.py``.
The real image is ../shared/data/sem_images/nmc_cathode_sem_682x1024.tif
(tldr-group/samba-web, backend/test_resources/4_phase.tif, MIT licence): an
NMC cathode cross-section with polycrystalline particles, porous CBD, pores,
curtaining and a saturated charging region. It has no labels, so its
per-phase histograms use a 3-class multi-Otsu split of a smoothed copy
(saturated pixels excluded) as an approximate phase map.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from skimage.filters import threshold_multiotsu  # noqa: E402

from fibrecon.simulate import simulate_sample  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "sem_images" / "nmc_cathode_sem_682x1024.tif"
NAMES = ["pore (silicone)", "AM", "CBD"]
COLOURS = ["#3b4cc0", "#d9a400", "#2a9d8f"]


def main():
    kvs = (1.0, 2.0, 5.0)
    sim = simulate_sample((6, 340, 512), (0.03, 0.03, 0.03), kvs, porosity=0.3, d50_um=8.0,
                          calendering=0.6, cbd_dispersion=0.6, seed=5)
    z = 3
    fig = plt.figure(figsize=(16, 10), constrained_layout=True)
    grid = fig.add_gridspec(3, 4)

    ax = fig.add_subplot(grid[0, :2])
    if REAL.exists():
        real = tifffile.imread(REAL).astype(float)
        ax.imshow(real, cmap="gray")
        ax.set_title("real: NMC cathode SEM cross-section (samba-web 4_phase.tif)")
    ax.axis("off")
    ax = fig.add_subplot(grid[0, 2:])
    ax.imshow(sim.raw[z, 1], cmap="gray")
    ax.set_title(f"simulated: NCA, {kvs[1]:g} kV, 30 nm pixels, all artifacts on")
    ax.axis("off")

    ax = fig.add_subplot(grid[1, :2])
    if REAL.exists():
        ok = real < 250
        smooth = ndi.gaussian_filter(real, 2)
        t = threshold_multiotsu(smooth[ok], classes=3)
        classes = np.digitize(smooth, t)  # 0 dark, 1 mid, 2 bright
        order = {0: 0, 1: 1, 2: 2}  # dark pore, mid AM, bright CBD/edges in this image
        for c, phase in order.items():
            ax.hist(real[ok & (classes == c)], bins=128, range=(0, 255), histtype="step",
                    color=COLOURS[phase], label=f"{NAMES[phase]} (multi-Otsu class {c})",
                    density=True)
        ax.set_title("real: grey levels per approximate phase (saturated pixels excluded)")
        ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[1, 2:])
    for phase in range(3):
        ax.hist(sim.raw[z, 1][sim.labels[z][:sim.raw.shape[2]] == phase], bins=128,
                range=(0, 65535), histtype="step", color=COLOURS[phase], label=NAMES[phase],
                density=True)
    ax.set_title("simulated: grey levels per true phase")
    ax.legend(fontsize=8)

    for i, kv in enumerate(kvs):
        ax = fig.add_subplot(grid[2, i])
        ax.imshow(sim.raw[z, i, :200, :260], cmap="gray")
        ax.set_title(f"same slice at {kv:g} kV (detail)")
        ax.axis("off")
    ax = fig.add_subplot(grid[2, 3])
    ax.imshow(sim.labels[z, :200, :260], cmap=matplotlib.colors.ListedColormap(COLOURS),
              vmin=-0.5, vmax=2.5, interpolation="nearest")
    ax.set_title("truth: pore / AM / CBD")
    ax.axis("off")
    out = ROOT / "docs" / "realism.png"
    fig.savefig(out, dpi=70)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
