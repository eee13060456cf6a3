"""Command line: `bdn serve [--config FILE] [--listen HOST:PORT]` (also `python -m bdn serve`).

The config file comes from `--config`, else `$BDN_CONFIG`, else the embedded defaults. A bad
config stops start-up with one line naming the key, and exit status 2; what the environment
refuses (the port is taken, `cache.dir` is unusable) is one line naming the setting, and status 3.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from bdn import __version__
from bdn.config import Config, ConfigError, load, parse_listen
from bdn.ops import requestlog


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bdn", description="Node-local cache for ML model weights.")
    parser.add_argument("--version", action="version", version=f"bdn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the cache daemon")
    serve.add_argument("--config", help="YAML config file (default: $BDN_CONFIG, else built-in defaults)")
    serve.add_argument("--listen", help="HOST:PORT to listen on (overrides the config)")
    warm = commands.add_parser("warm", help="preheat a node's cache and show progress")
    warm.add_argument("urls", nargs="+", help="hf://org/model@rev[/path], s3://bucket/key-or-prefix/, gcs://bucket/...")
    warm.add_argument("--node", default="http://127.0.0.1:8080", help="the bdn node to fill (default: %(default)s)")
    warm.add_argument("--pin", action="store_true", help="never evict these objects")
    return parser


def load_config(path: str | None, listen: str | None) -> Config:
    config = load(path or os.environ.get("BDN_CONFIG") or None)
    if listen is not None:
        host, port = parse_listen("--listen", listen)
        config = config.model_copy(update={"listen_host": host, "listen_port": port})
    return config


def _run(config: Config) -> None:
    from bdn.server import serve

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        asyncio.run(serve(config))
        return
    uvloop.run(serve(config))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "warm":
        from bdn.cli.warm import warm

        return warm(args.node, args.urls, args.pin)
    try:
        config = load_config(args.config, args.listen)
    except ConfigError as exc:
        print(f"bdn: config error: {exc}", file=sys.stderr)
        return 2
    requestlog.configure(config.log_level)
    from bdn.server import StartupError

    try:
        _run(config)
    except StartupError as exc:
        print(f"bdn: {exc}", file=sys.stderr)
        return 3
    return 0
