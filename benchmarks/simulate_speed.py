"""Time the simulator on a 256x512x512 sample at 2 kV (issue 3 target: < 2 min on 2 cores).

Run: ``.venv/bin/python benchmarks/simulate_speed.py``; prints one table row.
"""

import resource
import time

from fibrecon.simulate import simulate_sample

start = time.perf_counter()
s = simulate_sample((256, 512, 512), (0.05, 0.05, 0.05), (1.0, 3.0), porosity=0.33, d50_um=5.0,
                    seed=1)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"| simulator, one sample | 256x512x512 voxels x 2 kV, d50 5 um, all artifacts | "
      f"{wall:.0f} s, peak RSS {peak:.0f} MB | {s.truth['particles_in_view']} particles in "
      f"view, true porosity {s.truth['volume_fraction_pore']:.4f} (target 0.33) | "
      f"`.venv/bin/python benchmarks/simulate_speed.py` |")
