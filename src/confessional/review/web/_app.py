"""The reviewers' web page: a small Starlette app over the inbox.

Pages (server-rendered, no JavaScript): ``/login``, ``/`` (the list), ``/review`` (one
review, with the decision forms), ``POST /decide``, ``POST /logout``.

Security: an access token is exchanged for a server-side session behind an HttpOnly,
SameSite=Strict cookie; every POST form carries the session's CSRF token; every value is
escaped by Jinja2's autoescape; the reviewer's name comes from the session; errors
render a short page, never a stack trace; a strict Content-Security-Policy allows only
the page's own stylesheet.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from confessional.episode import message_text
from confessional.errors import ConfessionalError, ConfessionHalted, ConfigurationError
from confessional.review.claims import DEFAULT_CLAIM_TTL_S, Claim
from confessional.review.errors import AlreadyResolvedError
from confessional.review.inbox import PendingReview, history, pending, resume
from confessional.telemetry import CaptureMode, ConfessionTelemetry

__all__ = ["SESSION_COOKIE", "create_app"]

logger = logging.getLogger("confessional.review.web")

SESSION_COOKIE = "confessional_review_session"
_HERE = Path(__file__).parent
_TRANSCRIPT_MESSAGES = 12
_MAX_NAME = 64
_DECISIONS = ("approve", "edit", "reject")
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class _Session:
    csrf: str
    expires: float
    reviewer: str | None = None


@dataclass
class _Sessions:
    """Server-side sessions: the cookie holds a random id and nothing else."""

    ttl_s: float
    _by_id: dict[str, _Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, session_id: str | None) -> _Session | None:
        now = time.monotonic()
        with self._lock:
            for stale in [k for k, s in self._by_id.items() if s.expires <= now]:
                del self._by_id[stale]
            return self._by_id.get(session_id) if session_id else None

    def new(self, reviewer: str | None = None) -> tuple[str, _Session]:
        session_id = secrets.token_urlsafe(32)
        session = _Session(secrets.token_urlsafe(32), time.monotonic() + self.ttl_s, reviewer)
        with self._lock:
            self._by_id[session_id] = session
        return session_id, session

    def drop(self, session_id: str | None) -> None:
        with self._lock:
            self._by_id.pop(session_id or "", None)


class _SecurityHeaders:
    """Adds the security headers to every response (a plain ASGI middleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [
                    (name.lower().encode(), value.encode())
                    for name, value in _HEADERS.items()
                    if name.lower().encode() not in present
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class _Refused(Exception):
    """A request refused with a short page (status and message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Row:
    """One line of the confession table."""

    objective: str | None
    label: str
    analysis: str | None


class _App:
    def __init__(
        self,
        *,
        checkpointer: BaseCheckpointSaver[Any],
        graph: Any,
        token: str,
        capture_content: CaptureMode | bool | None,
        claim_ttl_s: float,
        session_ttl_s: float,
    ) -> None:
        if not token or len(token) < 16:
            raise ConfigurationError("the access token must have at least 16 characters")
        if isinstance(session_ttl_s, bool) or not isinstance(session_ttl_s, int | float):
            raise ConfigurationError(f"session_ttl_s must be a number, got {session_ttl_s!r}")
        if not 0 < session_ttl_s < 10**9:
            raise ConfigurationError(f"session_ttl_s must be positive, got {session_ttl_s!r}")
        self.checkpointer = checkpointer
        self.graph = graph
        self.token = token
        self.telemetry = ConfessionTelemetry(capture_content=capture_content, log_events=False)
        self.content = self.telemetry.capture_content != "NO_CONTENT"
        self.claim_ttl_s = claim_ttl_s
        self.sessions = _Sessions(session_ttl_s)
        self.templates = Environment(
            loader=FileSystemLoader(_HERE / "templates"),
            autoescape=True,  # every value, in every template
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # -- plumbing -----------------------------------------------------------------------

    def page(self, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(content=self.content, **values)
        return HTMLResponse(html, status_code=status)

    def refusal(self, status: int, message: str, session: _Session | None) -> HTMLResponse:
        return self.page("error.html", status, message=message, session=session)

    def session_of(self, request: Request) -> tuple[str | None, _Session | None]:
        session_id = request.cookies.get(SESSION_COOKIE)
        return session_id, self.sessions.get(session_id)

    def reviewer_session(self, request: Request) -> _Session | None:
        _, session = self.session_of(request)
        return session if session is not None and session.reviewer else None

    @staticmethod
    def set_cookie(response: Response, session_id: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            httponly=True,
            samesite="strict",
            path="/",
        )

    @staticmethod
    def check_csrf(request: Request, form: FormData, session: _Session) -> None:
        sent = form.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(
            sent.encode(), session.csrf.encode()
        ):
            raise _Refused(
                403,
                "The form has expired or did not come from this page. "
                "Reload the page and try again.",
            )
        origin = request.headers.get("origin")
        if origin and origin != "null":
            expected = f"{request.url.scheme}://{request.url.netloc}"
            if origin != expected:
                raise _Refused(403, "The form was sent from another site.")

    # -- pages --------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        session_id, session = self.session_of(request)
        if session is not None and session.reviewer:
            return RedirectResponse("/", status_code=303)
        fresh = session is None
        if session is None:
            session_id, session = self.sessions.new()
        response = self.page("login.html", session=session, error=None)
        if fresh and session_id:
            self.set_cookie(response, session_id)
        return response

    async def login(self, request: Request) -> Response:
        session_id, session = self.session_of(request)
        if session is None:
            return self.refusal(403, "Your session has expired. Open the login page again.", None)
        form = await request.form()
        self.check_csrf(request, form, session)
        token = form.get("token")
        name = form.get("name")
        name = " ".join(name.split()) if isinstance(name, str) else ""
        if not isinstance(token, str) or not hmac.compare_digest(
            token.strip().encode(), self.token.encode()
        ):
            return self.page("login.html", 403, session=session, error="Wrong access token.")
        if not name or len(name) > _MAX_NAME or not name.isprintable():
            return self.page(
                "login.html",
                400,
                session=session,
                error=f"Give your name (1 to {_MAX_NAME} characters): it is recorded with "
                "every decision you take.",
            )
        # A new session id at login, so an id seen before it is worth nothing.
        self.sessions.drop(session_id)
        new_id, _ = self.sessions.new(reviewer=name)
        response = RedirectResponse("/", status_code=303)
        self.set_cookie(response, new_id)
        return response

    async def logout(self, request: Request) -> Response:
        session_id, session = self.session_of(request)
        if session is not None:
            self.check_csrf(request, await request.form(), session)
            self.sessions.drop(session_id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def listing(self, request: Request) -> Response:
        session = self.reviewer_session(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        thread = request.query_params.get("thread", "").strip()
        order = "newest" if request.query_params.get("sort") == "newest" else "oldest"
        reviews = await run_in_threadpool(pending, self.checkpointer)
        if thread:
            reviews = [r for r in reviews if thread.lower() in r.thread_id.lower()]
        if order == "newest":
            reviews = list(reversed(reviews))
        return self.page("list.html", session=session, reviews=reviews, thread=thread, order=order)

    async def detail(self, request: Request) -> Response:
        session = self.reviewer_session(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        thread = request.query_params.get("thread", "")
        interrupt = request.query_params.get("interrupt", "")
        review, claims, transcript = await run_in_threadpool(self._detail, thread, interrupt)
        return self.page(
            "detail.html",
            status=200 if review is not None else 404,
            session=session,
            thread=thread,
            interrupt=interrupt,
            review=review,
            rows=self._rows(review),
            findings=self._findings(review),
            claims=claims,
            transcript=transcript,
        )

    def _detail(
        self, thread: str, interrupt: str
    ) -> tuple[PendingReview | None, list[Claim], list[tuple[str, str]]]:
        if not thread:
            return None, [], []
        found = pending(self.checkpointer, thread_id=thread, content=True)
        review = next((r for r in found if r.interrupt_id == interrupt), None)
        claims = history(self.checkpointer, thread)
        transcript = self._transcript(thread) if review is not None and self.content else []
        return review, claims, transcript

    def _transcript(self, thread: str) -> list[tuple[str, str]]:
        state = self.graph.get_state({"configurable": {"thread_id": thread}})
        messages = state.values.get("messages", []) if isinstance(state.values, dict) else []
        excerpt: list[tuple[str, str]] = []
        for message in messages[-_TRANSCRIPT_MESSAGES:]:
            if not isinstance(message, BaseMessage):
                continue
            text = message_text(message)
            if isinstance(message, AIMessage) and message.tool_calls:
                calls = ", ".join(str(c.get("name", "?")) for c in message.tool_calls)
                text = f"{text}\n[calls: {calls}]".strip()
            role = (
                "user"
                if isinstance(message, HumanMessage)
                else f"tool {message.name or ''}".strip()
                if isinstance(message, ToolMessage)
                else "assistant"
                if isinstance(message, AIMessage)
                else message.type
            )
            excerpt.append((role, self.telemetry.text(text)))
        return excerpt

    def _rows(self, review: PendingReview | None) -> list[_Row]:
        report = review.confession.report if review and review.confession else None
        if report is None:
            return []
        text = self.telemetry.text
        return [
            _Row(
                objective=text(o.objective) if self.content else None,
                label=o.compliance,
                analysis=text(o.analysis) if self.content else None,
            )
            for o in report.compliance_analysis
        ]

    def _findings(self, review: PendingReview | None) -> list[dict[str, str | None]]:
        confession = review.confession if review else None
        if confession is None:
            return []
        text = self.telemetry.text
        return [
            {
                "kind": f.kind,
                "severity": f.severity,
                "evidence": f.evidence,
                "subject": text(f.subject) if self.content and f.subject else None,
                "detail": text(f.detail) if self.content else None,
            }
            for f in confession.findings
        ]

    async def decide(self, request: Request) -> Response:
        session = self.reviewer_session(request)
        if session is None:
            _, anonymous = self.session_of(request)
            return self.refusal(403, "Log in first: decisions need a reviewer.", anonymous)
        form = await request.form()
        self.check_csrf(request, form, session)
        thread, interrupt, kind = (form.get(k) for k in ("thread", "interrupt", "decision"))
        if not (isinstance(thread, str) and isinstance(interrupt, str) and kind in _DECISIONS):
            raise _Refused(400, "The form is incomplete: thread, review and decision are needed.")
        decision: dict[str, Any] = {"type": kind}
        if kind == "edit":
            answer = form.get("answer")
            if not isinstance(answer, str) or not answer.strip():
                raise _Refused(400, "An edit needs the answer to deliver instead.")
            # Browsers send a text area's line breaks as CRLF.
            answer = answer.replace("\r\n", "\n")
            decision["edited_action"] = {"name": "deliver_answer", "args": {"answer": answer}}
        message = form.get("message")
        if kind == "reject" and isinstance(message, str) and message.strip():
            decision["message"] = message.strip()
        try:
            done = await run_in_threadpool(
                resume,
                self.graph,
                thread,
                {"decisions": [decision]},
                interrupt_id=interrupt,
                reviewer=session.reviewer,
                claim_ttl_s=self.claim_ttl_s,
            )
        except AlreadyResolvedError as exc:
            who = exc.reviewer or "another reviewer"
            when = f" at {exc.decided_at}" if exc.decided_at else ""
            return self.page(
                "resolved.html",
                409,
                session=session,
                message=f"Already resolved by {who}{when}.",
                detail=str(exc),
                thread=thread,
            )
        except ConfessionHalted:
            # A rejection with reject_action="error": applied, and the run ended by raising.
            return self.page(
                "decided.html", session=session, decision=kind, thread=thread, halted=True
            )
        except ConfessionalError as exc:
            # Our own refusals are one line written for the reviewer; nothing else is shown.
            return self.refusal(400, str(exc), session)
        return self.page(
            "decided.html",
            session=session,
            decision=done.decision.action,
            thread=done.thread_id,
            paused_again=done.paused_again,
            took_over=done.took_over,
            halted=False,
        )


def create_app(
    *,
    checkpointer: BaseCheckpointSaver[Any],
    graph: Any,
    token: str,
    capture_content: CaptureMode | bool | None = None,
    claim_ttl_s: float = DEFAULT_CLAIM_TTL_S,
    session_ttl_s: float = 8 * 3600.0,
) -> Starlette:
    """The review web app (an ASGI app; serve it with uvicorn, see :func:`serve`).

    Args:
        checkpointer: a sync checkpointer holding the paused runs (``SqliteSaver``,
            ``PostgresSaver`` or ``InMemorySaver``).
        graph: the graph that paused, compiled with ``checkpointer``.
        token: the access token a reviewer exchanges for a session (16 characters or more).
        capture_content: whether pages show the model's words (the withheld answer, the
            transcript, objectives, analyses, findings' details), by the rule of spans:
            see :class:`~confessional.ConfessionTelemetry`. Default ``None``: follow
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (off when unset).
        claim_ttl_s: passed to :func:`~confessional.review.resume`. Default 300 s.
        session_ttl_s: how long a login lasts. Default 8 hours.
    """
    app = _App(
        checkpointer=checkpointer,
        graph=graph,
        token=token,
        capture_content=capture_content,
        claim_ttl_s=claim_ttl_s,
        session_ttl_s=session_ttl_s,
    )

    def guarded(
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await endpoint(request)
            except _Refused as refused:
                _, session = app.session_of(request)
                return app.refusal(refused.status, str(refused), session)
            except HTTPException:
                raise
            except Exception:
                logger.exception("review page %s failed", request.url.path)
                _, session = app.session_of(request)
                return app.refusal(
                    500, "Something went wrong; the server's log has the details.", session
                )

        return run

    routes = [
        Route("/", guarded(app.listing)),
        Route("/login", guarded(app.login_form), methods=["GET"]),
        Route("/login", guarded(app.login), methods=["POST"]),
        Route("/logout", guarded(app.logout), methods=["POST"]),
        Route("/review", guarded(app.detail)),
        Route("/decide", guarded(app.decide), methods=["POST"]),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    starlette = Starlette(debug=False, routes=routes)
    starlette.add_middleware(_SecurityHeaders)
    return starlette
