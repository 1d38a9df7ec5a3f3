"""histomil.slides."""
