"""The error of one stored surface against another (bf16 or fp16 against fp32).

    python bench/surface_error.py results.h5 /surface/fp32 /surface/bf16

For every field both groups hold (loss, error, adv_loss, adv_error), prints the largest
absolute difference and that difference relative to the reference's largest magnitude.
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np

FIELDS = ("loss", "adv_loss", "error", "adv_error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("reference", help="group of the reference surface (fp32)")
    parser.add_argument("other", help="group of the surface to compare")
    args = parser.parse_args()
    with h5py.File(args.file, "r") as f:
        ref, other = f[args.reference], f[args.other]
        for name in FIELDS:
            if name not in ref or name not in other:
                continue
            a, b = np.asarray(ref[name], dtype=np.float64), np.asarray(other[name], np.float64)
            worst = float(np.nanmax(np.abs(a - b)))
            scale = float(np.nanmax(np.abs(a))) or 1.0
            print(
                f"{args.other} against {args.reference}, {name}: max abs error {worst:.3g}, "
                f"relative to max |{name}| {worst / scale:.3g}"
            )


if __name__ == "__main__":
    main()
