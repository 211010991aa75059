"""``tether replay RESPONSE_ID``: the chain up to a response, from the durable store."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from tether.protocol.errors import ProtocolError
from tether.replay.against import divergence_text, rerun
from tether.replay.chain import load_chain
from tether.replay.transcript import as_request, transcript_json, transcript_text
from tether.server.app import open_store, provider_router
from tether.server.auth import ANONYMOUS_TENANT
from tether.settings import Settings
from tether.settings_file import ConfigError, load_settings
from tether.store.base import Store
from tether.store.sqlite import SQLiteStore


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="tether replay", description=__doc__)
    parser.add_argument("response_id")
    parser.add_argument("--config", type=Path, help="TOML config file (for its store_url and routes)")
    parser.add_argument("--store-url", help="default: the configured store (a SQLite file is read read-only)")
    parser.add_argument("--tenant", default=ANONYMOUS_TENANT, help=f"the chain's tenant (default {ANONYMOUS_TENANT!r})")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="the transcript as JSON")
    shape.add_argument("--as-request", action="store_true", help="the equivalent stateless request, as JSON")
    shape.add_argument("--against", metavar="MODEL", help="re-run the chain's inputs on MODEL and show divergence")
    args = parser.parse_args(list(argv))
    try:
        settings = load_settings(args.config, os.environ)
    except ConfigError as error:
        print(f"tether replay: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_replay(args, args.store_url or settings.store_url, settings))
    except ProtocolError as error:
        print(f"tether replay: {error.message}", file=sys.stderr)
        return 1
    except Exception as error:  # a store that cannot be opened (in use, damaged, unreachable): one line
        print(f"tether replay: {error}", file=sys.stderr)
        return 2


async def _replay(args: argparse.Namespace, store_url: str, settings: Settings) -> int:
    if store_url.startswith("sqlite:///"):  # read beside a running server, which holds the file's lock
        store: Store = await SQLiteStore.open(store_url.removeprefix("sqlite:///"), read_only=True)
    else:
        store = await open_store(store_url)
    try:
        turns = await load_chain(store, args.tenant, args.response_id)
    finally:
        await store.close()
    if args.as_request:
        print(orjson.dumps(as_request(turns[-1]), option=orjson.OPT_INDENT_2).decode())
    elif args.json:
        print(orjson.dumps(transcript_json(turns), option=orjson.OPT_INDENT_2).decode())
    elif args.against:
        comparisons = await rerun(turns, args.against, provider_router(settings))
        print(divergence_text(comparisons, args.against))
        return 0 if all(c.same for c in comparisons) and len(comparisons) == len(turns) else 3
    else:
        print(transcript_text(turns))
    return 0
