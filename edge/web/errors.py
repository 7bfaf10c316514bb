"""Every error of the web API is a JSON ``{"error": message}`` with a fitting status, never a traceback.

==========================================  ======  =============================================
exception                                   status  when
==========================================  ======  =============================================
``HTTPException``                           as set  auth (401 + ``WWW-Authenticate``), limits …
``RequestValidationError``                  422     a missing or malformed field (named)
:class:`~edge.web.uploads.UploadError`      4xx     empty 400, too large 413, not an image 415
``EnrollmentError``                         422     too few good photos (``verdicts`` per photo)
``UnknownUserError``                        404     no such enrolled person
``UserExistsError``                         409     enrolled already (use mode replace or add)
:class:`~edge.web.bench.BenchNotFound`      404     no bench report yet
other ``EdgeError``, ``ValueError``         400     bad input named by the library's message
anything else                               500     logged with its traceback; the client gets none
==========================================  ======  =============================================
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from edge.errors import EdgeError, EnrollmentError, UnknownUserError, UserExistsError
from edge.web.bench import BenchNotFound
from edge.web.uploads import UploadError

__all__ = ["install_error_handlers", "error_response"]

log = logging.getLogger(__name__)


def error_response(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers of the table above on ``app``."""

    @app.exception_handler(HTTPException)
    async def _http(request, exc):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg")} for e in exc.errors()]
        where = ", ".join(f"{e['field']}: {e['problem']}" for e in errors)
        return error_response(422, f"invalid request ({where})", details=errors)

    @app.exception_handler(UploadError)
    async def _upload(request, exc):
        return error_response(exc.status, str(exc))

    @app.exception_handler(EnrollmentError)
    async def _enrol(request, exc):
        return error_response(422, str(exc), verdicts=getattr(exc, "verdicts", []))

    @app.exception_handler(UnknownUserError)
    async def _unknown(request, exc):
        return error_response(404, str(exc.args[0]) if exc.args else "unknown user")

    @app.exception_handler(UserExistsError)
    async def _exists(request, exc):
        return error_response(409, str(exc))

    @app.exception_handler(BenchNotFound)
    async def _no_bench(request, exc):
        return error_response(404, str(exc))

    @app.exception_handler(EdgeError)
    async def _edge(request, exc):
        return error_response(400, str(exc))

    @app.exception_handler(ValueError)
    async def _value(request, exc):
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error (details are in the service log)")
