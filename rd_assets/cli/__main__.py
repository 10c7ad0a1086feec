"""``python -m rd_assets.cli``: same as the ``rd-assets`` console script."""

from rd_assets.cli import main

raise SystemExit(main())
