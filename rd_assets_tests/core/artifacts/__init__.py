"""Tests of rd_assets/core/artifacts."""
