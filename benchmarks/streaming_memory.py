"""Peak memory of streaming align + preprocess on a 1000-slice 1024x1024 stack.

Run: ``.venv/bin/python benchmarks/streaming_memory.py [n_slices] [folder]``.
Writes per-slice 16-bit TIFFs with FEI metadata (a textured field drifting
as a random walk, with noise), then runs the library's streaming align and
preprocess exactly as the workflow's scripts do, to files, and reports the
peak resident memory of this process (target: <= 2 GB for 1000 slices).
"""

import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

sys.path.insert(0, str(ROOT / "benchmarks"))
from results_md import write_section  # noqa: E402

from fibrecon import files  # noqa: E402
from fibrecon import simulated_files  # noqa: E402
from fibrecon.align import aligned_slices, common_region, estimate_drift  # noqa: E402
from fibrecon.preprocess import (PreprocessParams, estimate_corrections,  # noqa: E402
                                 preprocessed_slices)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    folder = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="fibrecon-"))
    size, pad = 1024, 32
    rng = np.random.default_rng(0)
    base = ndi.gaussian_filter(rng.random((size + 2 * pad, size + 2 * pad)).astype(np.float32), 3)
    base = (base - base.min()) / (base.max() - base.min())
    drift = np.clip(np.cumsum(rng.normal(0, 0.3, (n, 2)), axis=0), -pad + 2, pad - 2)
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for z in range(n):
        img = ndi.shift(base, drift[z], order=1)[pad: pad + size, pad: pad + size]
        img = 2000 + 40000 * img + rng.normal(0, 800, img.shape)
        simulated_files.write_sem_slice(raw / f"slice_{z:04d}_2kV.tif", img.astype(np.uint16),
                           pixel_size_um=0.02, kv=2.0)
    print(f"wrote {n} slices in {time.perf_counter() - t:.0f} s; peak {peak_mb():.0f} MB")
    stack = files.RawStack(raw, "slice_{slice:04d}_{kv}kV.tif", [2.0])
    t = time.perf_counter()
    result = estimate_drift(stack)
    window = common_region(result.drift, stack.shape[2:])
    shape = (n, 1, window[0].stop - window[0].start, window[1].stop - window[1].start)
    files.write_volume_slices(folder / "aligned.tif", aligned_slices(stack, result.drift, window),
                           shape, stack.dtype, (0.02, 0.02, 0.02), channels=True)
    t_align = time.perf_counter() - t
    err = np.abs(result.drift - (drift - drift[0])).max()
    print(f"align: {n / t_align:.1f} slices/s, max drift error {err:.2f} px, "
          f"peak {peak_mb():.0f} MB")
    p = PreprocessParams(denoise="gaussian")
    t = time.perf_counter()
    with files.VolumeReader(folder / "aligned.tif") as aligned:
        corrections = estimate_corrections(aligned, p)
        files.write_volume_slices(folder / "preprocessed.tif",
                               preprocessed_slices(aligned, p, corrections), aligned.shape,
                               np.float32, aligned.voxel_size, channels=True)
    t_pre = time.perf_counter() - t
    print(f"preprocess: {n / t_pre:.1f} slices/s, peak {peak_mb():.0f} MB")
    row = (f"| streaming align + preprocess, peak RSS | {n}x1024x1024, 1 channel, from and to "
          f"TIFF files | {peak_mb():.0f} MB (target <= 2048 MB for 1000 slices) | align "
          f"{n / t_align:.1f} slices/s, preprocess {n / t_pre:.1f} slices/s (same run) | "
          f"`.venv/bin/python benchmarks/streaming_memory.py {n}` |")
    print(row)
    write_section("streaming memory (benchmarks/streaming_memory.py)",
                  "| what | size | peak memory | throughput (same run) | command |\n"
                  "| --- | --- | --- | --- | --- |\n" + row)
    if len(sys.argv) <= 2:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
