#!/usr/bin/env python
"""Summarise a py-spy raw profile (``py-spy record --threads -f raw -o FILE``): samples per thread, and per thread
the functions with the most self samples and total (inclusive) samples.

    python bench/pyspy_top.py FILE [--top 15] [--thread SUBSTRING]

Threads are grouped by name with their numbers taken out (``pyinfer-out-p3`` -> ``pyinfer-out-p#``), so eight
members' output threads read as one line. Kept short enough for the device tool's 12,000-character output tail.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--thread", default="", help="only threads whose name contains this")
    p.add_argument("--rate", type=float, default=0, help="py-spy's sampling rate (-r): with --seconds, prints the "
                   "share of the time some thread held the GIL (for a --gil profile)")  # fmt: skip
    p.add_argument("--seconds", type=float, default=0, help="how long py-spy sampled (-d)")
    p.add_argument("--depth", type=int, default=0, help="also show the N-frame stack tails with most self samples")
    args = p.parse_args(argv)
    per_thread: collections.Counter[str] = collections.Counter()
    selfs: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    tails: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    with open(args.file, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = stack.split(";")
        thread = re.sub(r"\d+", "#", re.sub(r"\(0x[0-9a-f]+\)", "", frames[0])).strip() if frames else "?"
        if args.thread and args.thread not in thread:
            continue
        frames = [re.sub(r" \(/.*/(src|bench|site-packages|lib)/", " (", f) for f in frames[1:]]
        per_thread[thread] += n
        if frames:
            selfs[thread][frames[-1]] += n
            if args.depth:
                tails[thread][" <- ".join(reversed(frames[-args.depth :]))] += n
        for f in set(frames):
            totals[thread][f] += n
    total = sum(per_thread.values())
    if args.rate and args.seconds:
        held = 100 * total / (args.rate * args.seconds)
        print(f"{total} samples in {args.seconds} s at {args.rate}/s: GIL held {held:.0f}%"
              " of the time (a --gil profile; py-spy misses samples under load, so a lower bound)")  # fmt: skip
    for thread, n in per_thread.most_common():
        print(f"== {thread}: {n} samples")
        print("   self:")
        for f, c in selfs[thread].most_common(args.top):
            print(f"   {c:6d} {100 * c / n:5.1f}%  {f[:140]}")
        print("   total:")
        for f, c in totals[thread].most_common(args.top):
            print(f"   {c:6d} {100 * c / n:5.1f}%  {f[:140]}")
        if args.depth:
            print("   tails:")
            for f, c in tails[thread].most_common(args.top):
                print(f"   {c:6d}  {f[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
