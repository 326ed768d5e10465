"""`dynamics report`: render the offline HTML report of a warehouse (index, one page per model, one across models)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reports.report import ReportConfig, render_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse", required=True, type=Path, help="the warehouse .duckdb file")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the report into")
    parser.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    parser.add_argument("--induction-threshold", type=float, default=ReportConfig.induction_threshold,
                        metavar="SCORE", help="induction score of a strong induction head (default: %(default)s)")
    parser.add_argument("--top-fraction", type=float, default=ReportConfig.top_fraction, metavar="F",
                        help="top heads = this fraction of all heads (default: %(default)s) ...")
    parser.add_argument("--min-top-heads", type=int, default=ReportConfig.min_top_heads, metavar="N",
                        help="... but at least N heads (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    config = ReportConfig(induction_threshold=args.induction_threshold, top_fraction=args.top_fraction,
                          min_top_heads=args.min_top_heads)
    index = render_report(args.warehouse, args.out, overwrite=args.overwrite, config=config)
    print(index)
    return 0
