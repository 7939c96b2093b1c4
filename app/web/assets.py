"""Static files (CSS, the small ES modules) with cache headers."""

from __future__ import annotations

from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

CACHE_CONTROL = b"public, max-age=600"  # short: files are not fingerprinted per release


class CachedStaticFiles(StaticFiles):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_cache(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                message["headers"] = [*message["headers"], (b"cache-control", CACHE_CONTROL)]
            await send(message)

        await super().__call__(scope, receive, send_with_cache)
