"""forgectl: find where an image was manipulated."""

__version__ = "0.1.0"
