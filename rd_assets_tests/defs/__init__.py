"""Tests of rd_assets/defs."""
