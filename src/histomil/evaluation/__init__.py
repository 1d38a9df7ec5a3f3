"""histomil.evaluation."""
