"""``rd-assets verify BUNDLE_DIR``: re-hash, re-validate and re-check a published bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rd_assets.cli.common import EXIT_ERROR, add_command, print_json, print_lines
from rd_assets.core.bundle.verify import verify_bundle
from rd_assets.core.contracts.bundle_models import VerifyReport
from rd_assets.core.errors import BundleIntegrityError


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "verify", "check a published bundle against its manifest and schemas")
    p.add_argument("bundle_dir", type=Path, help="<store>/<task_id> or one of its version directories")
    p.add_argument("--json", action="store_true", help="print the VerifyReport as JSON")
    p.set_defaults(handler=run)


def render(report: VerifyReport) -> list[str]:
    """The human report: which version was checked and each problem (they quote the bundle's own names)."""
    lines = [f"bundle {report.bundle_dir}", f"  version  {report.version_dir}", f"  task     {report.task_id}"]
    lines.append(f"  content  sha256 {report.content_hash}  ({report.checked_files} files)")
    lines += [f"  note     {note}" for note in report.notes]
    if report.ok:
        lines.append("  OK")
    else:
        lines.append(f"  {len(report.problems)} problem(s):")
        lines += [f"    - {problem}" for problem in report.problems]
    return lines


def run(args: argparse.Namespace) -> int:
    report = verify_bundle(args.bundle_dir)
    if args.json:
        print_json(report)
    else:
        print_lines(render(report))
    if not report.ok:
        print_lines([f"error: {BundleIntegrityError.code}: {len(report.problems)} problem(s)"], sys.stderr)
        return EXIT_ERROR
    return 0
