"""The version of the groundwire SDK distribution."""

__version__ = "0.1.0"
