"""rd-assets: exact, trustworthy consumer bundles from RD-Agent task logs."""

__version__ = "0.1.0"
