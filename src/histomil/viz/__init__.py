"""histomil.viz."""
