"""Placeholder: owned by the live-market helper."""
