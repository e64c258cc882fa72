"""Every error leaves the API in one JSON shape (`schemas.ErrorBody`):

    {"status_code": 422, "detail": "human message",
     "errors": [{"field": "extractor_config.path", "message": "..."}]}

`errors` lists the fields at fault for validation failures and is empty otherwise.
A request body that does not fit its schema is 422; a malformed body, query or path value
is 400; an unknown id is 404; a name clash is 409; an unexpected failure is 500 (logged,
with no internals in the answer).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from litestar import Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotFoundException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap

from api.schemas import ErrorBody, FieldError

log = logging.getLogger(__name__)

# Sources Litestar names for parameters outside the body; anything else is the body.
_PARAMETER_SOURCES = frozenset({"query", "path", "header", "cookie"})


class InvalidInput(ClientException):
    """The body parsed but does not make a valid request: 422 naming each field at fault."""

    status_code = HTTP_422_UNPROCESSABLE_ENTITY

    def __init__(self, errors: Iterable[FieldError], detail: str = "Validation failed") -> None:
        self.errors = list(errors)
        super().__init__(detail=detail)


class Conflict(ClientException):
    """The request clashes with stored state (a job name already taken)."""

    status_code = HTTP_409_CONFLICT


class BrokerUnavailable(HTTPException):
    """The message broker did not take an event this request must publish."""

    status_code = HTTP_503_SERVICE_UNAVAILABLE


_DESCRIPTIONS = {
    400: "Malformed request or query parameter",
    404: "No such resource",
    409: "Name already taken",
    422: "The body is not a valid request; `errors` names each field",
    503: "The message broker is unavailable",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error answers a handler may give, all `ErrorBody`.

    400 is always listed: it replaces the entry Litestar adds with its own error shape.
    """
    return {
        code: ResponseSpec(
            data_container=ErrorBody, description=_DESCRIPTIONS[code], generate_examples=False
        )
        for code in sorted({400, *codes})
    }


def not_found(kind: str, ident: object) -> NotFoundException:
    return NotFoundException(detail=f"no {kind} with id {ident}")


def _answer(body: ErrorBody) -> Response[dict[str, Any]]:
    return Response(content=body.model_dump(mode="json"), status_code=body.status_code)


def _validation_errors(extra: object, query: Collection[str]) -> tuple[list[FieldError], bool]:
    """Litestar's error list as FieldErrors, and whether any of them is about the body.

    Litestar names the source of a bad handler parameter, but not of a parameter read by a
    dependency (`limit`, `offset`), nor of a body field: a key that is in the query string
    is taken as a parameter.
    """
    if not isinstance(extra, list):
        return [], False
    errors: list[FieldError] = []
    about_body = False
    for item in extra:
        if not isinstance(item, Mapping):
            continue
        key = str(item.get("key") or "body")
        source = item.get("source")
        if (source is None or str(source) not in _PARAMETER_SOURCES) and key not in query:
            about_body = True
        errors.append(FieldError(field=key, message=str(item.get("message", ""))))
    return errors, about_body


def handle_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors, about_body = _validation_errors(exc.extra, request.query_params.keys())
    status = HTTP_422_UNPROCESSABLE_ENTITY if about_body else HTTP_400_BAD_REQUEST
    detail = exc.detail
    if errors:
        where = "request body" if about_body else "request parameters"
        detail = f"Invalid {where}: " + "; ".join(f"{e.field}: {e.message}" for e in errors)
    return _answer(ErrorBody(status_code=status, detail=detail, errors=errors))


def handle_invalid_input(_: Request[Any, Any, Any], exc: InvalidInput) -> Response[Any]:
    detail = "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or exc.detail
    return _answer(ErrorBody(status_code=exc.status_code, detail=detail, errors=exc.errors))


def handle_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    response = _answer(ErrorBody(status_code=exc.status_code, detail=exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _answer(
        ErrorBody(status_code=HTTP_500_INTERNAL_SERVER_ERROR, detail="Internal server error")
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ValidationException: handle_validation,
    InvalidInput: handle_invalid_input,
    HTTPException: handle_http,
    Exception: handle_unexpected,
}
