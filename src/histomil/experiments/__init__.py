"""histomil.experiments."""
