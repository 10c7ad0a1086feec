"""Tests of rd_assets/core/session."""
