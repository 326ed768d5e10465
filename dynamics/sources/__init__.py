"""Where checkpoints come from: the model catalogue, local folders and the Hugging Face Hub cache, weight files."""
