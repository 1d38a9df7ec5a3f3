"""histomil.training."""
