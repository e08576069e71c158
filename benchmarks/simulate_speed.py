"""Time the simulator on a 256x512x512 sample at 2 kV (issue 3 target: < 2 min on 2 cores).

Run: ``.venv/bin/python benchmarks/simulate_speed.py``; prints one table row.
"""

import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import write_section  # noqa: E402

from fibrecon.simulate import simulate_sample  # noqa: E402

start = time.perf_counter()
s = simulate_sample((256, 512, 512), (0.05, 0.05, 0.05), (1.0, 3.0), porosity=0.33, d50_um=5.0,
                    seed=1)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
row = (f"| simulator, one sample | 256x512x512 voxels x 2 kV, d50 5 um, all artifacts | "
      f"{wall:.0f} s, peak RSS {peak:.0f} MB | {s.truth['particles_in_view']} particles in "
      f"view, true porosity {s.truth['volume_fraction_pore']:.4f} (target 0.33) | "
      f"`.venv/bin/python benchmarks/simulate_speed.py` |")
print(row)
write_section("simulator speed (benchmarks/simulate_speed.py)",
              "| what | size | time, memory | same run | command |\n"
              "| --- | --- | --- | --- | --- |\n" + row + " (target < 120 s)")
