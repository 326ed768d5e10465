"""ICL tasks: task and prompt types, built-in and synthetic task families, Todd-format task files, prompt sets."""
