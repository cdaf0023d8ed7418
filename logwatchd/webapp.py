"""The count API's Flask app, whatever hosts it (SPEC §6): counts, health, OpenAPI, /docs, JSON errors.

`create_count_app` takes what differs between hosts: where the counts come from (the
daemon's SQLite `Ledger`, the Lambda function's `DynamoLedger`: both have `count(day,
action)` and `counts(day)`), the health probe, which exceptions mean "the ledger cannot be
read" (answered 503) and the OpenAPI document of the routes served. The daemon (api.py)
adds its own routes on top; the Lambda function (aws/api.py) serves it as it is. Nothing
here imports the daemon's server, metrics or status page, so a Lambda cold start does not
pay for them.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Mapping
from datetime import date, datetime
from importlib import resources
from typing import Any, Protocol

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from . import logs
from .config import TransformConfig
from .openapi import MAX_ACTION_CHARS
from .records import utc_now

Clock = Callable[[], datetime]
Health = Callable[[], dict[str, Any]]

# YYYY-MM-DD in ASCII digits only (`\d` would take other scripts' digits too); the calendar
# check (no 2026-02-30) is date.fromisoformat's.
_DATE_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# Pages and their assets, served from installed packages: no CDN, works offline. /docs is
# Swagger UI as flask-swagger-ui ships it (its own page template has an inline script, which
# the CSP below forbids, so the page and the script that starts Swagger UI are ours).
JS, CSS, HTML = ("text/javascript; charset=utf-8", "text/css; charset=utf-8",
                 "text/html; charset=utf-8")
Assets = Mapping[str, tuple[str, str, str]]   # route → (package, resource, content type)
DOCS_ASSETS: Assets = {
    "/docs": ("logwatchd", "static/docs.html", HTML),
    "/docs/init.js": ("logwatchd", "static/docs-init.js", JS),
    "/docs/swagger-ui-bundle.js": ("flask_swagger_ui", "dist/swagger-ui-bundle.js", JS),
    "/docs/swagger-ui.css": ("flask_swagger_ui", "dist/swagger-ui.css", CSS)}
# Pages run only scripts of this server and talk only to it. Swagger UI (React) sets
# style attributes, hence 'unsafe-inline' for styles on /docs only: no script is inline.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
DOCS_CSP = PAGE_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


class CountSource(Protocol):
    """Valid rows per (event date, action), committed with each input."""

    def count(self, day: str, action: str) -> int: ...

    def counts(self, day: str) -> dict[str, int]: ...


class BadParameter(Exception):
    """A query parameter is missing, repeated or malformed: answered 400."""


def json_response(body: Any, status: int = 200) -> Response:
    response = Response(orjson.dumps(body), status=status, mimetype="application/json")
    # Answers change with every committed file: no cache may keep one.
    response.headers["Cache-Control"] = "no-store"
    return response


def create_count_app(counts: CountSource, transform: TransformConfig, *, health: Health,
                     document: dict[str, Any], unavailable: tuple[type[Exception], ...],
                     clock: Clock = utc_now, log_hint: str = "the daemon's log") -> Flask:
    """/logins_today, /counts, /healthz, /openapi.json and /docs over `counts`.

    `health()` returns the /healthz body (`status` "ok" answers 200, anything else 503);
    the exceptions in `unavailable` answer 503; any other exception a JSON 500 pointing
    to `log_hint`.
    """
    app = Flask("logwatchd", static_folder=None)
    # Without this Flask answers OPTIONS itself with an empty non-JSON body; we want 405.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    zone = transform.zone
    spec = orjson.dumps(document)
    log = logs.get_logger()

    def today() -> str:
        return clock().astimezone(zone).date().isoformat()

    def logins_today_answer() -> dict[str, Any]:
        day = today()
        return {"logins_today": counts.count(day, "login"), "date": day,
                "timezone": transform.timezone}

    @app.get("/logins_today")
    def logins_today() -> Response:
        return json_response(logins_today_answer())

    app.wsgi_app = FastLoginsToday(app.wsgi_app, logins_today_answer)  # type: ignore[method-assign]

    @app.get("/counts", endpoint="counts")
    def day_counts() -> Response:
        day = _date_param()
        action = _action_param()
        if action is None:
            return json_response({"date": day, "counts": counts.counts(day)})
        return json_response({"date": day, "action": action, "count": counts.count(day, action)})

    @app.get("/healthz")
    def healthz() -> Response:
        body = health()
        return json_response(body, 200 if body["status"] == "ok" else 503)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return Response(spec, mimetype="application/json")

    add_assets(app, DOCS_ASSETS)

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.errorhandler(BadParameter)
    def bad_parameter(exc: BadParameter) -> Response:
        return json_response({"error": str(exc)}, 400)

    def ledger_unavailable(exc: Exception) -> Response:
        # A busy, broken or missing ledger is an outage to report, not a bug of this request.
        log.error(logs.INTERNAL_ERROR, where="http", path=request.path, error=repr(exc))
        return json_response({"error": f"the ledger cannot be read: {exc}"}, 503)

    for error in unavailable:
        app.register_error_handler(error, ledger_unavailable)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        response = exc.get_response()  # keeps headers such as Allow on a 405
        if isinstance(exc, NotFound):
            message = f"no such path: {request.path}"
        elif isinstance(exc, MethodNotAllowed):
            allowed = ", ".join(exc.valid_methods or ())
            message = f"method {request.method} not allowed on {request.path}; allowed: {allowed}"
        else:
            message = exc.description or exc.name
        response.set_data(orjson.dumps({"error": message}))
        response.mimetype = "application/json"
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.error(logs.INTERNAL_ERROR, where="http", path=request.path, error=repr(exc),
                  traceback=traceback.format_exc())
        return json_response({"error": f"internal error; see {log_hint}"}, 500)

    return app


def add_assets(app: Flask, assets: Assets) -> None:
    """Serves each asset (read once, now) at its route, /docs ones with the CSP Swagger UI needs."""
    for route, (package, name, content_type) in assets.items():
        body = (resources.files(package) / name).read_bytes()
        csp = DOCS_CSP if route.startswith("/docs") else PAGE_CSP
        app.add_url_rule(route, route, _asset_view(body, content_type, csp), methods=["GET"])


def _asset_view(body: bytes, content_type: str, csp: str) -> Callable[[], Response]:
    def view() -> Response:
        response = Response(body, content_type=content_type)
        response.headers["Content-Security-Policy"] = csp
        return response
    return view


class FastLoginsToday:
    """WSGI middleware answering `GET /logins_today` without Flask's per-request machinery.

    It is the endpoint dashboards poll. Flask's request context, routing and response
    objects cost about 0.2 ms of the 0.5 ms a request takes under waitress on this
    hardware; skipping them is what reaches the throughput target. The answer is the
    same function the Flask view calls; anything else, and any error, goes to Flask.
    """

    HEADERS = (("Content-Type", "application/json"), ("Cache-Control", "no-store"),
               ("X-Content-Type-Options", "nosniff"))

    def __init__(self, wsgi_app: Callable[..., Any], answer: Callable[[], dict[str, Any]]) -> None:
        self.wsgi_app = wsgi_app
        self.answer = answer

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != "/logins_today" or environ.get("REQUEST_METHOD") != "GET":
            return self.wsgi_app(environ, start_response)
        try:
            body = orjson.dumps(self.answer())
        except Exception:  # noqa: BLE001 - not swallowed: Flask meets it again below
            # Let the Flask view meet the same error: it answers it as JSON (503 or 500) and logs it.
            return self.wsgi_app(environ, start_response)
        start_response("200 OK", [*self.HEADERS, ("Content-Length", str(len(body)))])
        return [body]


# --- parameters --------------------------------------------------------------------------
def _single(name: str) -> str | None:
    values = request.args.getlist(name)
    if len(values) > 1:
        raise BadParameter(f"{name}: given {len(values)} times; give it once")
    return values[0] if values else None


def _date_param() -> str:
    raw = _single("date")
    if raw is None:
        raise BadParameter("date: required, as YYYY-MM-DD")
    if not _DATE_SHAPE.fullmatch(raw):
        raise BadParameter(f"date: must be YYYY-MM-DD, got {raw[:40]!r}")
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError:
        raise BadParameter(f"date: {raw} is not a day of the calendar") from None


def _action_param() -> str | None:
    action = _single("action")
    if action is None:
        return None
    if not action:
        raise BadParameter("action: must not be empty")
    if len(action) > MAX_ACTION_CHARS:
        raise BadParameter(f"action: longer than {MAX_ACTION_CHARS} characters")
    return action
