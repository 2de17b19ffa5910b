#!/usr/bin/env python3
"""Draws bench_hostmem.py's JSON: sleep and wake rate for each host budget, as a ratio to the
pinned line rate (or, all spilled, to the disk's rate), and the GPU-bound loop's rate beside bare.

  scripts/plot_hostmem.py bench_hostmem.json docs/hostmem.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        r = json.load(f)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    t = r.get("tiers")
    if t:
        labels, sleep, wake = [], [], []
        for s in t["scenarios"]:
            c = s["cycles"][-1]
            disk = "sleep_vs_disk" in c
            labels.append(s["label"] + (" (x disk)" if disk else ""))
            sleep.append(c["sleep_vs_disk"] if disk else c["sleep_vs_line"])
            wake.append(c["wake_vs_disk"] if disk else c["wake_vs_line"])
        y = range(len(labels))
        ax = axes[0]
        ax.barh([i + 0.2 for i in y], sleep, height=0.4, label="sleep")
        ax.barh([i - 0.2 for i in y], wake, height=0.4, label="wake")
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels)
        ax.axvline(1.0, color="gray", lw=0.8)
        ax.set_xlabel("rate / line rate (or disk rate) measured in the same run")
        ax.set_title(f"{t['gib']:.0f} GiB against the host budget")
        ax.legend()
    h = r.get("host")
    if h:
        ax = axes[1]
        for key, label in (("bare", "bare"), ("gpusleep", "gpusleep"),
                           ("gpusleep_eager", "eager pinning")):
            ax.plot(h[key]["seconds"], label=label)
        ax.set_xlabel("seconds after allocating")
        ax.set_ylabel("loop steps a second")
        ax.set_title(f"GPU-bound loop while {h['gib']:.0f} GiB of mirrors are prepared")
        ax.legend()
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main()
