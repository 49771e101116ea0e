#!/usr/bin/env python3
"""Sums Nsight Compute's per-launch GPU times (gpu__time_duration) by kernel.

Usage: kernel_profile.py NCU_CSV [TOP]
NCU_CSV is `ncu --csv --metrics gpu__time_duration.sum ...` output (lines of the
profiled program's own output are skipped). Prints the kernels sorted by total
time with their launch count and share: where a step's GPU time goes.
"""
import collections
import csv
import re
import sys


def short_name(kernel):
    # "void ns::(anonymous namespace)::gemm_kernel<float, 4>(Args...)" -> "gemm_kernel<float, 4>"
    name = re.sub(r"\(anonymous namespace\)::", "", kernel)
    name = re.sub(r"^void ", "", name)
    depth, out = 0, []
    for ch in name:  # drop the argument list, keep template arguments
        if ch == "(" and depth == 0:
            break
        depth += ch == "<"
        depth -= ch == ">"
        out.append(ch)
    return "".join(out).split("::")[-1] if "<" not in "".join(out) else "".join(out).replace("engine::", "")


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    with open(path, newline="") as f:
        rows = [line for line in f if line.startswith('"')]
    total_ns = collections.Counter()
    launches = collections.Counter()
    for row in csv.DictReader(rows):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))
        scale = {"ns": 1, "nsecond": 1, "us": 1e3, "usecond": 1e3, "ms": 1e6, "msecond": 1e6}.get(row["Metric Unit"], 1)
        name = short_name(row["Kernel Name"])
        total_ns[name] += value * scale
        launches[name] += 1
    grand = sum(total_ns.values())
    print(f"{'kernel':<90} {'launches':>8} {'total ms':>9} {'share':>6}")
    for name, ns in total_ns.most_common(top):
        print(f"{name[:90]:<90} {launches[name]:>8} {ns / 1e6:>9.2f} {100 * ns / grand:>5.1f}%")
    print(f"{'all kernels':<90} {sum(launches.values()):>8} {grand / 1e6:>9.2f}")


if __name__ == "__main__":
    main()
