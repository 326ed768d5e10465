"""Training-dynamics analysis: induction and function-vector head scores across checkpoints."""

__version__ = "0.1.0"
