"""The best single mapping length for every L, from a profile's V-curves, and a profile that uses it.

    python scripts/fixed_mapping.py smollm2-135m
    python scripts/fixed_mapping.py smollm2-135m --out results/smollm2-135m/profile-fixed.json

Prints the one m with the least mean log-PPL excess over the calibration lengths
(``calibration.best_fixed_mapping``), and at each length its excess and that of the
profile's m(L) (``calibration.mapping_excess``), both read off the measured V-curves. ``--out`` writes a copy
of the profile whose m(L) is that constant (head, tail, mode and attention factor kept), for
``lampe-eval --profile OUT --methods lampe``: the length-awareness ablation, tuned once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lampe_calib.calibration import Profile, best_fixed_mapping, load_profile, mapping_excess, save_profile

# m(L) = c / (1 + exp(-(a·L + b))) is the constant c to float precision when b = 50 and a·L is
# negligible (a must be > 0: the schema's sigmoid grows with L).
_CONSTANT_A, _CONSTANT_B = 1e-12, 50.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="a shipped profile name or a JSON path")
    parser.add_argument("--out", help="write a copy of the profile whose m(L) is the best single m")
    args = parser.parse_args(argv)
    if args.out and not Path(args.out).expanduser().resolve().parent.is_dir():
        print(f"error: --out {args.out}: its directory does not exist", file=sys.stderr)
        return 2
    try:
        profile = load_profile(args.profile)
        points = profile.curve_points()
        fixed = best_fixed_mapping(points)
        # A degenerate profile (too few lengths for a fit) has curves but no m(L) to compare.
        fitted = None if profile.status == "degenerate" else mapping_excess(points, profile.mapping_length)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"best single m for L = {', '.join(map(str, fixed.excess))}: {fixed.mapping:g}")
    print("PPL over the best measured m at each L:")
    for length, excess in fixed.excess.items():
        line = f"  L = {length}: single m {100 * excess:+.2f} %"
        if fitted is not None:
            line += f", profile's m(L) = {profile.mapping_length(length):.0f} {100 * fitted[length]:+.2f} %"
        print(line)
    if args.out:
        data = profile.to_dict()
        data["sigmoid"] = {
            "status": "fitted",
            "message": f"one m for every L: {fixed.mapping:g} (scripts/fixed_mapping.py {args.profile})",
            "missing": [],
            "a": _CONSTANT_A,
            "b": _CONSTANT_B,
            "c": fixed.mapping,
            "c_mode": "fixed",
        }
        try:
            save_profile(Profile.from_dict(data), args.out)  # atomic: nothing half-written
        except OSError as error:
            print(f"error: --out {args.out}: {error}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
