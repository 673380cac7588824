"""The version of this library, recorded in every explanation it produces."""

__version__ = "1.0.0"
