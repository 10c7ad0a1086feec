"""One module per route group; each builds an ``APIRouter`` over the app's :class:`BundleReader`."""
