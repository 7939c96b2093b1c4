"""GET/POST /login and POST /logout: a browser keeps its API key in an HttpOnly cookie.

The cookie is SameSite=Strict, and a form post it authenticates must also come from a
Hopper page (Origin checked in app.api.access), so another site cannot post with it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from app.api.access import COOKIE, access_of, check_same_origin
from app.web.pages import _HEADERS, TEMPLATES

router = APIRouter(tags=["login"])

_FORM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["key"],
                    "properties": {
                        "key": {"type": "string", "description": "An API key (hop_...)."},
                        "next": {"type": "string", "description": "A local path to go to."},
                    },
                }
            }
        },
    }
}
_HTML: dict[int | str, dict[str, Any]] = {
    401: {"description": "The key is unknown or revoked: the form again, with the reason."},
    403: {"description": "The form was posted from another site."},
}


@router.get("/login", response_class=HTMLResponse, summary="Log-in form for browsers")
async def login_form(
    request: Request, next: str = Query(default="/", max_length=2048)
) -> HTMLResponse:
    return _form(request, local_path(next))


@router.post(
    "/login",
    status_code=303,
    response_class=RedirectResponse,
    summary="Log in: keep the key in a cookie, then go to `next`",
    responses=_HTML,
    openapi_extra=_FORM_BODY,
)
async def login(request: Request) -> Response:
    if _has_source(request):
        check_same_origin(request)
    form = await request.form()
    key, target = str(form.get("key") or "").strip(), local_path(str(form.get("next") or "/"))
    access = access_of(request)
    if not access.enabled:
        return RedirectResponse(target, status_code=303)  # nothing to log in to
    if access.keys.verify(key) is None:
        return _form(request, target, "That key is unknown or was revoked.", status_code=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        path="/",
        httponly=True,  # no script, not even a Hopper page's, can read it
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", status_code=303, response_class=RedirectResponse, summary="Log out")
async def logout(request: Request) -> Response:
    if _has_source(request):
        check_same_origin(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


def local_path(target: str) -> str:
    """Only a path on this server: never `//host`, a scheme, or a backslash trick."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    return target


def _form(
    request: Request, target: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    context = {"next": target, "error": error}
    return TEMPLATES.TemplateResponse(
        request, "login.html", context, status_code=status_code, headers=_HEADERS
    )


def _has_source(request: Request) -> bool:
    return "origin" in request.headers or "referer" in request.headers
