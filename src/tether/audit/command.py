"""``tether audit``: export chains with a manifest, and verify an exported file."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from tether.audit.chain import verify
from tether.audit.export import ExportFilter, export, manifest_path, parse_time
from tether.audit.log import AuditLog

DEFAULT_DIRECTORY = Path(".tether/audit")  # beside the default database, .tether/tether.db


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="tether audit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export_cmd = commands.add_parser("export", help="write chains as JSON lines plus a manifest with each chain's head")
    export_cmd.add_argument("--dir", type=Path, default=DEFAULT_DIRECTORY, help="the audit directory")
    export_cmd.add_argument("--tenant", help="only this tenant's chain")
    export_cmd.add_argument("--since", help="ISO 8601 time: entries at or after it")
    export_cmd.add_argument("--until", help="ISO 8601 time: entries at or before it")
    export_cmd.add_argument("--output", "-o", type=Path, default=Path("audit-export.jsonl"))
    verify_cmd = commands.add_parser("verify", help="check an exported file; non-zero and the first bad line if not")
    verify_cmd.add_argument("file", type=Path)
    verify_cmd.add_argument("--manifest", type=Path, help="default: FILE.manifest.json beside the file")
    args = parser.parse_args(list(argv))
    if args.command == "export":
        return _export(args)
    return _verify(args.file, args.manifest or manifest_path(args.file))


def _export(args: argparse.Namespace) -> int:
    try:
        selection = ExportFilter(
            args.tenant,
            parse_time(args.since) if args.since else None,
            parse_time(args.until) if args.until else None,
        )
    except ValueError as error:
        print(f"tether audit export: {error}: give times as ISO 8601, e.g. 2026-12-01T08:00:00Z", file=sys.stderr)
        return 2
    if not args.dir.is_dir():
        print(f"tether audit export: no audit log in {args.dir} (use --dir)", file=sys.stderr)
        return 2
    manifest = export(AuditLog(args.dir), args.output, selection, now=time.time())
    print(f"{args.output}: {manifest['lines']} lines in {len(manifest['chains'])} chains; manifest beside it")
    return 0


def _verify(path: Path, manifest_file: Path) -> int:
    if not path.is_file():
        print(f"tether audit verify: {path} does not exist", file=sys.stderr)
        return 2
    manifest = orjson.loads(manifest_file.read_bytes()) if manifest_file.is_file() else None
    with path.open(encoding="utf-8", errors="replace") as handle:
        problem = verify(handle, manifest)
    if problem is not None:
        print(f"{path}:{problem.line}: {problem.reason}")
        return 1
    note = "" if manifest is not None else " (no manifest: lines cut from either end cannot be seen)"
    print(f"{path}: OK{note}")
    return 0
