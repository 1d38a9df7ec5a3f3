"""histomil.models."""
