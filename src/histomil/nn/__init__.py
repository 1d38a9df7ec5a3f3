"""histomil.nn."""
