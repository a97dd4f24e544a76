"""attnlab: self-attention models over customer event histories."""

__version__ = "0.1.0"
