"""Per-checkpoint ICL experiments: few-shot accuracy, head ablations and function-vector execution."""
