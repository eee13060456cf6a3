"""Typed keys for the per-app state that handlers reach: the config and the object cache."""

from __future__ import annotations

from aiohttp import web

from bdn.cache.object_cache import ObjectCache
from bdn.config import Config

CACHE_KEY = web.AppKey("cache", ObjectCache)
CONFIG_KEY = web.AppKey("config", Config)
