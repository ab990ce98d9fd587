"""Review and check a plan made by another planning system, from its DICOM files.

Shows: the secondary dose check (planner recomputes the RT Plan's dose from its control points
and compares it with the system's RT Dose: gamma 3 %/2 mm, TG-218's 95 % pass rate, DVH points
per structure), then the review report of the same plan with a protocol's goals.

Run from the repository root with the plan's files (a step-and-shoot 6 MV photon RT Plan, its
RT Dose, the RT Structure Set and the folder of the CT series):

    .venv/bin/python examples/review_and_check.py RP.dcm RD.dcm RS.dcm ct/ out/review \\
        --protocol head_and_neck

OUT must not exist; it receives report.html and check.json. No plan of another system at hand?
Plan one with ``planner plan example:cshape --out out/cshape`` and pass its ``dicom/`` files.
"""

import argparse
from pathlib import Path

import planner
from planner.check import write_check_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rtplan", type=Path)
    parser.add_argument("rtdose", type=Path)
    parser.add_argument("rtstruct", type=Path)
    parser.add_argument("ct", type=Path, help="folder of the CT series")
    parser.add_argument("out", type=Path, help="folder to create")
    parser.add_argument("--protocol", help="protocol file or bundled name, for its goals")
    args = parser.parse_args()

    check = planner.check_plan(args.rtplan, rtdose=args.rtdose, ct=args.ct,
                               rtstruct=args.rtstruct, device="cpu")
    print(planner.format_check(check))

    review = planner.review_plan(args.rtplan, args.rtdose, args.rtstruct, args.ct, args.out,
                                 protocol=args.protocol, predict=True, device="cpu")
    write_check_json(args.out / "check.json", check)
    print(f"{len(review.goals) - len(review.unmet_goals)} of {len(review.goals)} goals met")
    for row in review.unmet_goals:
        print(f"  NOT MET {row.goal.label}: {row.value:.2f} {row.unit}")
    print(f"check {'PASSED' if check.passed else 'FAILED'}; "
          f"report: {args.out / 'report.html'}")


if __name__ == "__main__":
    main()
