"""Where the time goes, from a py-spy profile: the share of samples under one frame, split by the
frames it calls (`make bench-profile` records one of `make bench`).

Usage: python benchmarks/profile_tree.py PROFILE.txt FRAME [--depth 2] [--top 25]
  PROFILE.txt  py-spy's raw output (`py-spy record -f raw`, one line per stack: frames
               separated by `;`, then the sample count)
  FRAME        the frame whose time is split, by its function name as py-spy prints it
               (`run_partition_with`, `ChunkEvaluator.outcome`, `_Run.finish`, ...)
Every sample whose stack holds FRAME is counted once, under the `--depth` frames it called.
py-spy samples busy threads only (no `--idle`), so the shares are of CPU time, not of waiting.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable
from pathlib import Path


def split_below(lines: Iterable[str], frame: str, depth: int) -> tuple[int, Counter[str]]:
    """The samples under `frame` (outermost occurrence), counted by the `depth` frames below it."""
    total, below = 0, Counter[str]()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        names = [f.split(" (", 1)[0] for f in stack.split(";")]
        if frame not in names:
            continue
        start = names.index(frame) + 1
        samples = int(count)
        total += samples
        below[" > ".join(names[start : start + depth]) or "(itself)"] += samples
    return total, below


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("frame")
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with args.profile.open(encoding="utf-8") as lines:
        total, below = split_below(lines, args.frame, args.depth)
    print(f"{args.frame}: {total:,} samples")
    for name, samples in below.most_common(args.top):
        print(f"{samples / total:6.1%} {samples:7,}  {name}")


if __name__ == "__main__":
    main()
