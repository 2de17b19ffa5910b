#!/usr/bin/env python3
"""Draws tests/gpu/test_diffusion.py's JSON: the time to have the diffusion server serving its
weights again after a training step, by sleep + wake + refit (weights dropped, reloaded by the
server's own load path) against kill and relaunch, each split into its parts; and a full sleep
and wake (everything offloaded) beside them.

  scripts/plot_diffusion.py diffusion.json docs/img/diffusion.png
"""
import json
import sys


def bars(r):
    """(label, [(part, seconds)]) for each way back to serving."""
    return [
        ("sleep + wake (all offloaded)", [("sleep", r["sleep_s"]), ("wake", r["wake_s"])]),
        ("sleep + wake + refit", [("sleep", r["refit_sleep_s"]), ("wake", r["refit_wake_s"]),
                                  ("refit", r["refit_s"])]),
        ("kill + relaunch", [("start to healthy", r["relaunch_ready_s"]),
                             ("first image", r["relaunch_first_image_s"])]),
    ]


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        r = json.load(f)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"sleep": "#4c72b0", "wake": "#55a868", "refit": "#c44e52",
              "start to healthy": "#8172b2", "first image": "#ccb974"}
    fig, ax = plt.subplots(figsize=(9, 3.2))
    rows = bars(r)
    for y, (label, parts) in enumerate(rows):
        left = 0.0
        for part, s in parts:
            ax.barh(y, s, left=left, color=colors[part], label=part)
            left += s
        ax.text(left, y, f" {left:.1f} s", va="center")
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    ax.legend(seen.values(), seen.keys(), loc="lower right", fontsize=8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(f"Diffusion server, {r['model_bytes'] / (1 << 30):.1f} GiB pipeline: back to "
                 f"serving (sleep + wake + refit {r['sleep_wake_refit_vs_relaunch']:.2f}x "
                 f"relaunch)", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print(dst)


if __name__ == "__main__":
    main()
