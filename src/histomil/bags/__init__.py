"""histomil.bags."""
