"""A deadline on every silence of a request body, which uvicorn would wait out forever."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BodyStalled

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})  # status polls pass straight through


class BodyIdleTimeout:
    """Pure ASGI: each `receive()` for more body must return within `idle_s`, or the
    request ends with 408 and its connection is closed. The upload reading the body gets
    the error, so it removes its partial file like any other failed upload. Once the body
    is complete, `receive()` only waits for a disconnect (event streams) and is not timed.
    """

    def __init__(self, app: ASGIApp, idle_s: float) -> None:
        self.app = app
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY or self.idle_s <= 0:
            await self.app(scope, receive, send)
            return
        body_complete = False

        async def receive_in_time() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            try:
                async with asyncio.timeout(self.idle_s):
                    message = await receive()
            except TimeoutError:
                raise BodyStalled(
                    f"The request body stalled: nothing arrived for {self.idle_s:g} s "
                    "(HOPPER_BODY_IDLE_TIMEOUT). Nothing of it was kept; send it again."
                ) from None
            body_complete = message["type"] != "http.request" or not message.get("more_body")
            return message

        await self.app(scope, receive_in_time, send)
