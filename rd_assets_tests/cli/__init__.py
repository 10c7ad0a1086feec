"""Tests of rd_assets/cli."""
