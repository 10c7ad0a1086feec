"""Tests of rd_assets/api."""
