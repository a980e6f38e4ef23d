"""Draws bench/results/<run>.png from <run>.json: throughput and latency rows, gateway vs peers.

Usage: python3 bench/chart.py bench/results/<run>.json
"""
import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [
    ("T1", "per_cpu_s", "T1 requests per SUT CPU-second (higher is better)"),
    ("T3", "per_cpu_s", "T3 full TLS handshakes per SUT CPU-second (higher is better)"),
    ("T2", "added_p99_ms", "T2 added p99 latency at 50% load, ms (lower is better)"),
    ("T6", "p99_ms", "T6 route update to served, p99 ms (lower is better)"),
]
SUTS = ["gateway", "nginx", "haproxy"]
COLORS = {"gateway": "#2a9d8f", "nginx": "#8d99ae", "haproxy": "#adb5bd"}


def median(records, sut, test, value):
    values = [r["values"][value] for r in records if r["sut"] == sut and r["test"] == test and value in r["values"]]
    if test == "T2" and values:
        rates = sorted({r["values"]["rate"] for r in records if r["test"] == "T2"})
        middle = rates[len(rates) // 2]
        values = [r["values"][value] for r in records if r["sut"] == sut and r["test"] == test and r["values"].get("rate") == middle]
    return statistics.median(values) if values else None


def main(path):
    document = json.load(open(path))
    records = document["records"]
    panels = [p for p in PANELS if any(median(records, s, p[0], p[1]) is not None for s in SUTS)]
    if not panels:
        # A run of other tests only (T5, attack, ...): the table has its figures.
        print("chart: nothing to draw in this run")
        return
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels)), squeeze=False)
    for axis, (test, value, title) in zip(axes[:, 0], panels):
        numbers = [median(records, s, test, value) or 0 for s in SUTS]
        bars = axis.barh(SUTS, numbers, color=[COLORS[s] for s in SUTS])
        axis.bar_label(bars, fmt="%.3g", padding=3)
        axis.set_title(title, fontsize=10, loc="left")
        axis.invert_yaxis()
        axis.margins(x=0.2)
    figure.tight_layout()
    out = path.rsplit(".", 1)[0] + ".png"
    figure.savefig(out, dpi=110)
    print(f"chart: {out}")


if __name__ == "__main__":
    main(sys.argv[1])
