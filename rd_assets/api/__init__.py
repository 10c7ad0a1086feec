"""Read-only Results API over published bundles: :func:`rd_assets.api.app.create_app`."""
