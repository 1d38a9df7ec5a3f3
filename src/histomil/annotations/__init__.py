"""histomil.annotations."""
