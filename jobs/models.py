"""`dynamics models`: print the Pythia catalogue (sizes, shapes, parameter counts, checkpoints)."""

from __future__ import annotations

import argparse

from dynamics.sources.catalogue import PYTHIA_MODELS, PYTHIA_STEPS

_COLUMNS = ("repo id", "layers", "d_model", "heads", "d_head", "rotary", "vocab", "params", "checkpoints")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the catalogue is fixed."""


def run(args: argparse.Namespace) -> int:
    rows = [
        (
            model.repo_id,
            str(model.n_layers),
            str(model.d_model),
            str(model.n_heads),
            str(model.d_head),
            str(model.rotary_dims),
            f"{model.vocab_rows:,}",
            f"{model.n_params:,}",
            str(len(PYTHIA_STEPS)),
        )
        for model in PYTHIA_MODELS.values()
    ]
    widths = [max(len(cell) for cell in column) for column in zip(_COLUMNS, *rows)]
    for row in (_COLUMNS, *rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        print("  ".join(cells))
    return 0
