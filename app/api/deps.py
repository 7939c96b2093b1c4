"""Typed access to the app's services from a request."""

from __future__ import annotations

from starlette.requests import Request

from app.services import Services


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
