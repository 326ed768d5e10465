"""`dynamics report`: render the offline HTML report of a warehouse (index, one page per model, one across models)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reports.report import ReportConfig, render_report
from warehouse.queries import Thresholds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse", required=True, type=Path, help="the warehouse .duckdb file")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the report into")
    parser.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    rule = parser.add_argument_group(
        "which heads count (the analysis views' parameters)",
        "A head is an induction (FV) head at a step when it is among the step's top heads by that score, scores "
        "at least the floor, and scores more than Z standard errors above zero.")
    defaults = Thresholds()
    rule.add_argument("--top-fraction", type=float, default=defaults.top_fraction, metavar="F",
                      help="top heads = this fraction of all heads (default: %(default)s) ...")
    rule.add_argument("--min-top-heads", type=int, default=defaults.min_top_heads, metavar="N",
                      help="... but at least N heads (default: %(default)s)")
    rule.add_argument("--induction-floor", type=float, default=defaults.induction_floor, metavar="SCORE",
                      help="least induction score of an induction head (default: %(default)s)")
    rule.add_argument("--fv-floor", type=float, default=defaults.fv_floor, metavar="SCORE",
                      help="least FV score of an FV head (default: %(default)s)")
    rule.add_argument("--z", type=float, default=defaults.z, metavar="Z",
                      help="standard errors a score must exceed zero by (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    thresholds = Thresholds(top_fraction=args.top_fraction, min_top_heads=args.min_top_heads,
                            induction_floor=args.induction_floor, fv_floor=args.fv_floor, z=args.z)
    index = render_report(args.warehouse, args.out, overwrite=args.overwrite, config=ReportConfig(thresholds))
    print(index)
    return 0
