"""Example controllers and the README demo."""
