"""Image stages stream: under a memory cap smaller than the stack they still finish.

Alignment, preprocessing and both segmentations (multi-Otsu on every slice, the shipped
U-Net, tiled, on every 4th slice) run under an address-space cap 300 MB above what the
imports mapped.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from scipy import ndimage as ndi
    from fibrecon import files
    from fibrecon import simulated_files
    from fibrecon.align import aligned_slices, common_region, estimate_drift
    from fibrecon.preprocess import PreprocessParams, estimate_corrections, preprocessed_slices
    from fibrecon.segment import combine_channels, label_slice, multiotsu_thresholds, sample_voxels
    import torch
    from fibrecon.infer import context_image, predict_probabilities, prepare_for_inference
    from fibrecon.unet import load_model

    torch.set_num_threads(2)
    net, card = load_model(sys.argv[3])
    net = prepare_for_inference(net)
    net(torch.zeros(1, 6, 64, 64))  # thread pools and kernels set up before the cap

    folder, mode = sys.argv[1], sys.argv[2]
    n, size = 120, 1024
    rng = np.random.default_rng(0)
    base = ndi.gaussian_filter(rng.random((size + 16, size + 16)).astype(np.float32), 3)
    base = (base - base.min()) / (base.max() - base.min())
    for z in range(n):
        img = (2000 + 40000 * base[8 + z % 3: 8 + z % 3 + size, 8: 8 + size]).astype(np.uint16)
        for kv in (1, 3):
            simulated_files.write_sem_slice(f"{folder}/raw/s_{z:03d}_{kv}kV.tif", img, pixel_size_um=0.02, kv=kv)
    stack_mb = n * 2 * size * size * 2 / 2**20
    # cap the address space: what is mapped now plus 300 MB, well below the stack's size
    vm_mb = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) / 1024
    cap = int((vm_mb + 300) * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    raw = files.RawStack(f"{folder}/raw", "s_{slice:03d}_{kv}kV.tif", [1, 3])
    if mode == "whole":  # the control: holding the stack does not fit
        files.read_raw_stack(f"{folder}/raw", "s_{slice:03d}_{kv}kV.tif", [1, 3])
        raise SystemExit("read the whole stack under the cap?")
    drift = estimate_drift(raw).drift
    window = common_region(drift, raw.shape[2:])
    shape = (n, 2, window[0].stop - window[0].start, window[1].stop - window[1].start)
    files.write_volume_slices(f"{folder}/aligned.tif", aligned_slices(raw, drift, window), shape,
                           np.uint16, (0.02,) * 3, channels=True)
    p = PreprocessParams()
    with files.VolumeReader(f"{folder}/aligned.tif") as st:
        corr = estimate_corrections(st, p)
        files.write_volume_slices(f"{folder}/pre.tif", preprocessed_slices(st, p, corr), st.shape,
                               np.float32, st.voxel_size, channels=True)
    with files.VolumeReader(f"{folder}/pre.tif") as st:
        t = multiotsu_thresholds(sample_voxels(st))
        labels = (label_slice(combine_channels(st[z]), t) for z in range(len(st)))
        files.write_volume_slices(f"{folder}/labels.tif", labels, (n, *st.shape[2:]), np.uint8,
                               st.voxel_size)
        # every 4th slice: each is read from the whole 960 MB float stack with its context
        # slices, tile by tile, as segment does; all 120 would only take 4x longer
        picked = range(0, len(st), 4)
        labels = (predict_probabilities(net, context_image(st, z, [0, 1], card["context"]),
                                        multiple=16, tile=512, overlap=32,
                                        batch_size=1).argmax(0)
                  for z in picked)
        files.write_volume_slices(f"{folder}/unet.tif", labels, (len(picked), *st.shape[2:]),
                               np.uint8, st.voxel_size)
    print(f"OK stack {stack_mb:.0f} MB, cap {cap / 2**20 - vm_mb:.0f} MB above the start")
""")


@pytest.mark.parametrize("mode", ["stream", "whole"])
def test_stages_finish_under_a_cap_smaller_than_the_stack(tmp_path, mode):
    (tmp_path / "raw").mkdir()
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "2"}
    model = Path(__file__).resolve().parents[2] / "resources" / "models" / "unet_1kV_3kV.pt"
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), mode, str(model)],
                            capture_output=True, text=True, env=env)
    if mode == "stream":
        assert result.returncode == 0, result.stderr[-3000:]
        assert "OK stack 480 MB" in result.stdout
    else:
        assert result.returncode != 0 and "MemoryError" in result.stderr
