#!/usr/bin/env bash
# The gate's overhead per intercepted GPU call while nothing is asleep (target: 20 ns or less).
# Runs scripts/bench/bench_gate bare and under LD_PRELOAD=libgpusleep.so, alternately, five times
# each, on 1 thread and on up to 4 (no more than the CPUs), and reports the median difference per call for a runtime-level
# launch (cudaLaunchKernel) and a driver-level one (cuLaunchKernel) of a stub that does nothing.
#   scripts/bench_gate.sh [BUILD_DIR] [OUT_JSON]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-bench_gate.json}
bench=$build/scripts/bench/bench_gate
lib=$PWD/$build/lib/libgpusleep.so
[ -x "$bench" ] || { echo "no $bench: build with nvcc available"; exit 1; }
export LD_LIBRARY_PATH=$PWD/$build/scripts/bench${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
python3 - "$bench" "$lib" "$out" <<'PY'
import json, os, statistics, subprocess, sys
bench, lib, out = sys.argv[1:4]
results = {}
many = max(1, min(4, os.cpu_count() or 1))
for threads in sorted({1, many}):
    runs = {"bare": [], "preloaded": []}
    for _ in range(5):
        for kind in ("bare", "preloaded"):
            env = {"LD_PRELOAD": lib} if kind == "preloaded" else {}
            p = subprocess.run([bench, "20000000", str(threads)], capture_output=True, text=True,
                               check=True, env={**os.environ, **env})
            runs[kind].append(json.loads(p.stdout))
    row = {}
    for level in ("runtime", "driver"):
        bare = statistics.median(r[f"{level}_ns"] for r in runs["bare"])
        pre = statistics.median(r[f"{level}_ns"] for r in runs["preloaded"])
        row[level] = {"bare_ns": bare, "preloaded_ns": pre, "overhead_ns": pre - bare}
    results[f"threads_{threads}"] = row
worst = max(v["overhead_ns"] for row in results.values() for v in row.values())
results["target_ns"] = 20
results["worst_overhead_ns"] = worst
with open(out, "w") as f:
    json.dump(results, f, indent=1)
for t in sorted({1, many}):
    row = results[f"threads_{t}"]
    print(f"gate overhead per call, {t} thread{'s' if t > 1 else ''}: "
          f"cudaLaunchKernel {row['runtime']['overhead_ns']:.1f} ns "
          f"({row['runtime']['bare_ns']:.1f} -> {row['runtime']['preloaded_ns']:.1f}), "
          f"cuLaunchKernel {row['driver']['overhead_ns']:.1f} ns "
          f"({row['driver']['bare_ns']:.1f} -> {row['driver']['preloaded_ns']:.1f})")
print(f"GATE BENCH: worst {worst:.1f} ns per call, target 20 ns: {'met' if worst <= 20 else 'MISSED'}")
PY
