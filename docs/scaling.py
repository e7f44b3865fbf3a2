#!/usr/bin/env python3
"""Draws docs/scaling.png from a sweep of `whctl bench -o json` reports.

Usage: docs/scaling.py DIR [OUT]. DIR holds one report per point, named
sw_subs_<K>.json, sw_backlog_<N>.json and sw_size_<KiB>.json (the README's
Performance section lists the commands). Needs matplotlib.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def reports(directory, prefix):
    """The sweep's points as (x, report), in order of x."""
    points = []
    for path in directory.glob(f"{prefix}_*.json"):
        points.append((int(path.stem.rsplit("_", 1)[1]), json.loads(path.read_text())))
    return sorted(points, key=lambda point: point[0])


def count_label(n):
    if n >= 1_000_000:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n >= 1000 else str(n)


def rates(axis, points, xs):
    axis.plot(xs, [r["ingest_rps"] for _, r in points], "o-", label="ingest")
    axis.plot(xs, [r["delivery_rps"] for _, r in points], "s--", label="delivery")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)


def main():
    directory = Path(sys.argv[1])
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/scaling.png"
    figure, (by_subs, by_backlog, by_size) = plt.subplots(1, 3, figsize=(13, 3.6))

    subs = reports(directory, "sw_subs")
    rates(by_subs, subs, [k for k, _ in subs])
    by_subs.set_xscale("log")
    by_subs.set_xlabel("subscriptions")
    by_subs.set_ylabel("webhooks/s")
    by_subs.set_title("rate vs subscriptions")
    by_subs.legend(loc="lower left")

    backlog = reports(directory, "sw_backlog")
    # Symmetric log scale, so that "no backlog" has a place on the axis.
    positions = [0 if n == 0 else 1 + (n / 100_000) ** 0.5 for n, _ in backlog]
    rates(by_backlog, backlog, positions)
    by_backlog.set_xticks(positions, [count_label(n) for n, _ in backlog])
    by_backlog.set_xlabel("pending retries in the database")
    by_backlog.set_title("rate vs backlog")
    rss = by_backlog.twinx()
    rss.plot(positions, [r["server_peak_rss_mib"] for _, r in backlog], "^:", color="gray")
    rss.set_ylim(0, 160)
    rss.set_ylabel("peak RSS (MiB)", color="gray")

    sizes = reports(directory, "sw_size")
    by_size.plot(
        [k for k, _ in sizes],
        [r["ingest_rps"] * r["payload_size"] / 1e6 for _, r in sizes],
        "o-",
    )
    by_size.set_xscale("log", base=2)
    by_size.set_xticks([k for k, _ in sizes], [str(k) for k, _ in sizes])
    by_size.set_ylim(bottom=0)
    by_size.grid(alpha=0.3)
    by_size.set_xlabel("payload (KiB)")
    by_size.set_ylabel("MB/s of bodies ingested")
    by_size.set_title("bytes vs payload size")

    figure.suptitle("whctl bench, -c 64, SQLite, 2 shared vCPUs (one run per point)", fontsize=10)
    figure.tight_layout()
    figure.savefig(out, dpi=100)


if __name__ == "__main__":
    main()
