"""Every error leaves the API in one JSON shape (`schemas.ErrorBody`):

    {"status_code": 422, "detail": "human message",
     "errors": [{"field": "extractor_config.path", "message": "..."}]}

`errors` lists the fields at fault for validation failures and is empty otherwise.
A request body that does not fit its schema is 422; a malformed body, query or path value
is 400; no or a bad token is 401, a token whose role may not is 403; an unknown id is 404;
a clash with stored state is 409; a body over `ORC_API_MAX_BODY_BYTES` is 413; a value
the database cannot store is 400. Only an unexpected failure is 500 (logged, with no
internals in the answer).
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
from sqlalchemy.exc import DataError, DBAPIError

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
    """The request clashes with stored state (a job name taken, a run in progress)."""

    status_code = HTTP_409_CONFLICT


class BrokerUnavailable(HTTPException):
    """The message broker did not take an event this request must publish."""

    status_code = HTTP_503_SERVICE_UNAVAILABLE


_DESCRIPTIONS = {
    400: "Malformed request or query parameter",
    401: "No bearer token, or one that is unknown or revoked",
    403: "The token's role may not do this",
    404: "No such resource",
    409: "The request conflicts with the stored state",
    413: "The request body is larger than the API accepts",
    422: "The body is not a valid request; `errors` names each field",
    503: "The message broker is unavailable",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error answers a handler may give, all `ErrorBody`.

    400 and 401 are always listed: 400 replaces the entry Litestar adds with its own error
    shape, and every route that documents errors needs a token.
    """
    return {
        code: ResponseSpec(
            data_container=ErrorBody, description=_DESCRIPTIONS[code], generate_examples=False
        )
        for code in sorted({400, 401, *codes})
    }


def not_found(kind: str, ident: object) -> NotFoundException:
    return NotFoundException(detail=f"no {kind} with id {ident}")


def _answer(body: ErrorBody) -> Response[dict[str, Any]]:
    return Response(content=body.model_dump(mode="json"), status_code=body.status_code)


def _public_name(request: Request[Any, Any, Any], key: str) -> str:
    """The name a client knows a parameter by: a header's name, not the handler's."""
    try:
        definition = request.route_handler.parsed_fn_signature.parameters.get(key)
    except AttributeError:
        return key
    alias = getattr(getattr(definition, "kwarg_definition", None), "name", None)
    return alias if isinstance(alias, str) and alias else key


def _validation_errors(
    request: Request[Any, Any, Any], extra: object, query: Collection[str]
) -> tuple[list[FieldError], bool]:
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
        source = getattr(source, "value", source)
        is_parameter = source is not None and str(source) in _PARAMETER_SOURCES
        if not is_parameter and key not in query:
            about_body = True
        field = _public_name(request, key) if is_parameter else key
        errors.append(FieldError(field=field, message=str(item.get("message", ""))))
    return errors, about_body


def handle_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors, about_body = _validation_errors(request, exc.extra, request.query_params.keys())
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


def _is_data_exception(exc: DBAPIError) -> bool:
    # SQLSTATE class 22 is "data exception" (a NUL character, a number out of range); not
    # every driver maps it to `DataError` (asyncpg's adapter gives a plain `DBAPIError`).
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(exc, DataError) or (isinstance(code, str) and code.startswith("22"))


def handle_database_error(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[Any]:
    """A value the database refused is the client's input: 400, not 500."""
    if not _is_data_exception(exc):
        return handle_unexpected(request, exc)
    log.info("database refused a value in %s %s: %s", request.method, request.url.path, exc.orig)
    return _answer(
        ErrorBody(status_code=HTTP_400_BAD_REQUEST, detail="A value in the request is not valid")
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _answer(
        ErrorBody(status_code=HTTP_500_INTERNAL_SERVER_ERROR, detail="Internal server error")
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ValidationException: handle_validation,
    InvalidInput: handle_invalid_input,
    HTTPException: handle_http,
    DBAPIError: handle_database_error,
    Exception: handle_unexpected,
}
