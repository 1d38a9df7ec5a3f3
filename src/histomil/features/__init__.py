"""histomil.features."""
