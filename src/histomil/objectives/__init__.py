"""histomil.objectives."""
