"""The FastAPI app behind ``lexlens serve``: typed routes over a :class:`Backend`, the web page,
clip-retrieval's ``/knn-service``, Prometheus metrics, and input hardening.

Routes (the OpenAPI schema is at ``/openapi.json``, interactive docs at ``/docs``):

* ``POST /search``: JSON query (text, base64 image, image + text, item id or embedding);
* ``POST /search/upload``: multipart image upload with optional text (image + text);
* ``POST /items`` / ``DELETE /items``: add / remove items (API key when one is set);
* ``GET /indexes``, ``GET /indexes/{name}``, ``GET /health``, ``GET /metrics``;
* ``GET /thumb/{index}/{id}``: a thumbnail of a stored image (only files the index records);
* ``POST /knn-service``, ``GET /indices-list``: clip-retrieval's protocol
  (:mod:`lexlens.server.clip_compat`);
* ``GET /``: the web page (``static/``).

Every error is a JSON object ``{"error": "one line"}`` with a 4xx status: malformed JSON
(400), bad fields (422), unknown index or item (404), too large a body or image (413), an
image that does not decode (400), a missing or wrong API key (401). Blocking work (decoding,
encoding, searching, writing) runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from lexlens.errors import (
    DataError,
    IndexMismatchError,
    LexlensError,
    ModelNotAvailableError,
    NotFoundError,
    UsageError,
)
from lexlens.server.backend import Backend, SearchOutcome
from lexlens.server.clip_compat import knn_query
from lexlens.server.images import (
    ImageInputError,
    ImageTooLargeError,
    decode_base64_image,
    decode_image,
    thumbnail_bytes,
)
from lexlens.server.metrics import CONTENT_TYPE, Metrics
from lexlens.server.schemas import (
    MAX_ID,
    MAX_K,
    MAX_TEXT,
    AddRequest,
    AddResponse,
    ErrorResponse,
    Health,
    IndexSummary,
    KnnRequest,
    KnnResult,
    QueryMode,
    RemoveRequest,
    RemoveResponse,
    SearchRequest,
    SearchResponse,
)

__all__ = ["Limits", "create_app", "check_bind", "is_loopback", "API_KEY_ENV", "STATIC_DIR"]

log = logging.getLogger("lexlens.server")

#: environment variable read by ``lexlens serve`` when ``--api-key`` is not given
API_KEY_ENV = "LEXLENS_API_KEY"
STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class Limits:
    """Input limits of the server."""

    #: largest uploaded image, in bytes (base64 in JSON may be 4/3 of this)
    max_upload_bytes: int = 16 * 1024 * 1024
    #: largest image, in pixels (refused from its header, before decoding: decompression bombs)
    max_image_pixels: int = 40_000_000
    #: largest k
    max_k: int = MAX_K
    #: thumbnails are at most this many pixels a side
    thumbnail_size: int = 256

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: a base64 image of the largest size plus 1 MiB of JSON."""
        return (self.max_upload_bytes * 4) // 3 + 1024 * 1024


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen on a non-loopback address without an API key for the write routes."""
    if not is_loopback(host) and not api_key:
        raise UsageError(
            f"binding {host} exposes the write routes to the network: set --api-key KEY "
            f"(or ${API_KEY_ENV}), or bind 127.0.0.1"
        )


# ----------------------------------------------------------------------------- errors
def _error(status: int, message: str, detail: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


_STATUS = [  # most specific first
    (ImageTooLargeError, 413),
    (ImageInputError, 400),
    (NotFoundError, 404),
    (IndexMismatchError, 409),
    (ModelNotAvailableError, 503),
    (UsageError, 400),
    (DataError, 400),
    (LexlensError, 400),
]


def _lexlens_status(e: LexlensError) -> int:
    return next(s for cls, s in _STATUS if isinstance(e, cls))


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e.get("ctx", {}) for e in errors if e.get("type") == "json_invalid")
        return _error(400, f"malformed JSON body: {ctx.get('error', 'cannot parse')}")
    detail = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]
    for d in detail:
        d["msg"] = d["msg"].removeprefix("Value error, ")
    summary = "; ".join(
        f"{'.'.join(d['loc'][1:] if len(d['loc']) > 1 else d['loc'])}: {d['msg']}" for d in detail
    )
    return _error(422, f"invalid request: {summary}", detail)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = (
                "cannot parse the request body (malformed JSON or form, or text that is not UTF-8)"
            )
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(LexlensError)
    async def _on_lexlens(_: Request, exc: LexlensError) -> JSONResponse:
        return _error(_lexlens_status(exc), str(exc))

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")


# ----------------------------------------------------------------------------- middleware
class _BodyTooLarge(StarletteHTTPException):
    """Raised while reading a (chunked) body past the limit; FastAPI passes HTTP errors on."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class _Guard:
    """ASGI middleware: request body size limit (413) and per-route request metrics."""

    def __init__(self, app: Any, limit: int, metrics: Metrics, routes: Any) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.routes = routes

    def _route(self, scope: dict[str, Any]) -> str:
        for r in self.routes():
            match, _ = r.matches(scope)
            if match == Match.FULL:
                return getattr(r, "path", "other")
        return "unmatched"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]
        started = [False]

        async def send_wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started[0] = True
            await send(message)

        async def too_large() -> None:
            resp = _error(413, f"request body larger than {self.limit} bytes")
            await resp(scope, receive, send_wrapped)

        try:
            length = dict(scope.get("headers") or []).get(b"content-length")
            try:
                declared = int(length) if length is not None else None
            except ValueError:
                declared = None
            if declared is not None and declared > self.limit:
                await too_large()
                return
            seen = [0]

            async def receive_limited() -> dict[str, Any]:
                message = await receive()
                if message["type"] == "http.request":
                    seen[0] += len(message.get("body", b""))
                    if seen[0] > self.limit:
                        raise _BodyTooLarge(self.limit)
                return message

            app_receive: Any = receive_limited
            ctype = dict(scope.get("headers") or []).get(b"content-type", b"")
            if ctype.lower().startswith(b"multipart/form-data"):
                # read the whole (limited) form first: its text fields must be UTF-8
                try:
                    body = await _read_body(receive_limited)
                except _BodyTooLarge:
                    await too_large()
                    return
                bad = _non_utf8_field(ctype, body)
                if bad is not None:
                    resp = _error(400, f"form field {bad!r} is not valid UTF-8 text")
                    await resp(scope, receive, send_wrapped)
                    return
                app_receive = _replay(body)
            try:
                await self.app(scope, app_receive, send_wrapped)
            except _BodyTooLarge:
                if started[0]:
                    raise
                await too_large()
        finally:
            self.metrics.observe_request(
                scope.get("method", "?"), self._route(scope), status[0], time.perf_counter() - t0
            )


async def _read_body(receive: Any) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _replay(body: bytes) -> Any:
    sent = [False]

    async def receive() -> dict[str, Any]:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _non_utf8_field(content_type: bytes, body: bytes) -> str | None:
    """The name of the first non-file field of a multipart form that is not UTF-8, if any
    (Starlette would silently read it as Latin-1)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    try:
        msg = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type + b"\r\n\r\n" + body
        )
    except Exception:  # a malformed form: the form parser reports it
        return None
    if not msg.is_multipart():
        return None
    for part in msg.iter_parts():
        if part.get_filename() is not None:
            continue
        data = part.get_payload(decode=True) or b""
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return str(part.get_param("name", header="content-disposition") or "?")
    return None


# ----------------------------------------------------------------------------- the app
_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="key of the write routes"
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 422)
}


def create_app(
    backend: Backend, api_key: str | None = None, limits: Limits | None = None
) -> FastAPI:
    """The HTTP app over ``backend``; ``api_key`` protects ``POST/DELETE /items`` when set."""
    from lexlens import __version__

    limits = limits or Limits()
    metrics = Metrics()
    app = FastAPI(
        title="lexlens",
        version=__version__,
        description="Image-text retrieval: dense, lexical and hybrid search over lexlens indexes.",
        responses=_ERRORS,
    )
    app.state.backend = backend
    app.state.metrics = metrics
    app.state.limits = limits
    _install_error_handlers(app)
    app.add_middleware(
        _Guard, limit=limits.max_body_bytes, metrics=metrics, routes=lambda: app.router.routes
    )

    async def require_key(
        request: Request, key: Annotated[str | None, Depends(_KEY_HEADER)] = None
    ) -> None:
        if api_key is None:
            return
        given = key
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise StarletteHTTPException(401, "missing or wrong API key (header X-API-Key)")

    def _image(b64: str) -> Any:
        return decode_base64_image(b64, limits.max_upload_bytes, limits.max_image_pixels)

    def _thumb(name: str, item_id: int) -> str:
        return f"/thumb/{quote(name, safe='')}/{item_id}"

    def _response(out: SearchOutcome, k: int) -> SearchResponse:
        metrics.observe_stages(out.index, out.timings)
        hits = [
            {**h.__dict__, "thumbnail": _thumb(out.index, h.id) if h.path else None}
            for h in out.hits
        ]
        timings = {s: round(t * 1000.0, 3) for s, t in out.timings.items()}
        return SearchResponse(index=out.index, query=out.query, k=k, hits=hits, timings_ms=timings)

    def _check_k(k: int) -> None:
        if not 1 <= k <= limits.max_k:
            raise RequestValidationError(
                [{"loc": ("body", "k"), "msg": f"k must be 1..{limits.max_k}", "type": "range"}]
            )

    def _run_search(req: SearchRequest) -> SearchOutcome:
        opts = {
            "k": req.k,
            "min_score": req.min_score,
            "where": req.where,
            "explain": req.explain,
            "query_mode": req.query_mode,
        }
        if req.embedding is not None:
            return backend.search_embedding(req.index, req.embedding, **opts)
        if req.item is not None:
            return backend.search_item(req.index, req.item, **opts)
        if req.image is not None:
            image = _image(req.image)
            if req.text is not None:
                return backend.search_image_text(req.index, image, req.text, req.weight, **opts)
            return backend.search_image(req.index, image, **opts)
        return backend.search_text(req.index, str(req.text), **opts)

    # ------------------------------------------------------------------ search
    @app.post("/search", response_model=SearchResponse, tags=["search"])
    async def search(req: SearchRequest) -> SearchResponse:
        """Search one index by text, image (base64), image + text, item id or embedding."""
        _check_k(req.k)
        backend.get(req.index)  # 404 before any decoding
        out = await run_in_threadpool(_run_search, req)
        return _response(out, req.k)

    @app.post("/search/upload", response_model=SearchResponse, tags=["search"])
    async def search_upload(
        image: Annotated[UploadFile, File(description="query image file")],
        text: Annotated[str | None, Form(max_length=MAX_TEXT)] = None,
        weight: Annotated[float, Form(ge=0.0, le=1.0)] = 0.5,
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
        min_score: Annotated[float | None, Form(allow_inf_nan=False)] = None,
        where: Annotated[str | None, Form(max_length=MAX_TEXT)] = None,
        index: Annotated[str | None, Form(max_length=100)] = None,
        explain: Annotated[bool, Form()] = True,
        query_mode: Annotated[QueryMode, Form()] = "encoder",
    ) -> SearchResponse:
        """Search by an uploaded image file, optionally with text (image + text, ``weight``)."""
        _check_k(k)
        backend.get(index)
        data = await image.read(limits.max_upload_bytes + 1)
        text = text if text else None
        opts = {
            "k": k,
            "min_score": min_score,
            "where": where,
            "explain": explain,
            "query_mode": query_mode,
        }

        def run() -> SearchOutcome:
            img = decode_image(data, limits.max_upload_bytes, limits.max_image_pixels)
            if text is not None:
                return backend.search_image_text(index, img, text, weight, **opts)
            return backend.search_image(index, img, **opts)

        out = await run_in_threadpool(run)
        return _response(out, k)

    # ------------------------------------------------------------------ items
    @app.post(
        "/items", response_model=AddResponse, tags=["items"], dependencies=[Depends(require_key)]
    )
    async def add_items(req: AddRequest) -> AddResponse:
        """Add new or changed files (paths on the server) to an index."""
        from lexlens.index.ingest import SourceItem

        name = backend.resolve(req.index)
        source: Any = req.source
        if req.items is not None:
            source = [SourceItem(i.path, None, list(i.captions), dict(i.fields)) for i in req.items]
        report = await run_in_threadpool(backend.add, name, source)
        return AddResponse(index=name, report=report)

    @app.delete(
        "/items",
        response_model=RemoveResponse,
        tags=["items"],
        dependencies=[Depends(require_key)],
    )
    async def remove_items(req: RemoveRequest) -> RemoveResponse:
        """Remove items by id or path, or those whose file is gone (``missing``)."""
        name = backend.resolve(req.index)
        removed = await run_in_threadpool(backend.remove, name, req.ids, req.paths, req.missing)
        return RemoveResponse(index=name, removed=removed, count=len(backend.get(name)))

    # ------------------------------------------------------------------ indexes
    @app.get("/indexes", response_model=list[IndexSummary], tags=["indexes"])
    async def list_indexes() -> list[dict[str, Any]]:
        """The served indexes."""
        return await run_in_threadpool(backend.summaries)

    @app.get("/indexes/{name}", tags=["indexes"])
    async def index_info(name: Annotated[str, PathParam(max_length=100)]) -> dict[str, Any]:
        """Facts about one index (as ``lexlens index info --json``)."""
        return await run_in_threadpool(backend.info, name)

    @app.get(
        "/thumb/{index}/{item_id}",
        tags=["indexes"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
    )
    async def thumbnail(
        index: Annotated[str, PathParam(max_length=100)],
        item_id: Annotated[int, PathParam(ge=0, le=MAX_ID)],
    ) -> Response:
        """A thumbnail of a stored image; only files the index itself records are served."""

        def run() -> tuple[bytes, str]:
            return thumbnail_bytes(backend.thumbnail_path(index, item_id), limits.thumbnail_size)

        data, media = await run_in_threadpool(run)
        return Response(data, media_type=media, headers={"Cache-Control": "max-age=3600"})

    # ------------------------------------------------------------------ operations
    @app.get("/health", response_model=Health, tags=["operations"])
    async def health() -> Health:
        """Liveness and the served index names."""
        return Health(status="ok", indexes=backend.names)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    async def prometheus() -> PlainTextResponse:
        """Request counts and latency / per-stage histograms (Prometheus text format)."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    # ------------------------------------------------------------------ clip-retrieval
    @app.post(
        "/knn-service",
        response_model=list[KnnResult],
        tags=["clip-retrieval"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": KnnRequest.model_json_schema()}},
            }
        },
    )
    async def knn_service(request: Request) -> list[dict[str, Any]]:
        """clip-retrieval's back-end search (``ClipClient`` posts JSON without a content type)."""
        try:
            payload = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            raise UsageError(f"malformed JSON body: {e}") from None
        if not isinstance(payload, dict):
            raise UsageError("the body must be a JSON object")
        try:
            req = KnnRequest.model_validate(payload)
        except Exception as e:  # pydantic.ValidationError
            errors = e.errors() if hasattr(e, "errors") else []
            raise RequestValidationError(
                [{**err, "loc": ("body", *err.get("loc", ()))} for err in errors]
            ) from None
        base = str(request.base_url).rstrip("/")

        def thumb_url(name: str, item_id: int) -> str:
            return base + _thumb(name, item_id)

        def observe(out: SearchOutcome) -> None:
            metrics.observe_stages(out.index, out.timings)

        return await run_in_threadpool(knn_query, backend, req, _image, thumb_url, observe)

    @app.get("/indices-list", response_model=list[str], tags=["clip-retrieval"])
    async def indices_list() -> list[str]:
        """clip-retrieval's list of index names."""
        return backend.names

    # ------------------------------------------------------------------ the page
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
