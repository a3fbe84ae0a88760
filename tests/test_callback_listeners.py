"""Who listens to a run's callbacks: tracers (child runs worth making) and custom-event
listeners (events worth dispatching)."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler, CallbackManager
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run

from confessional._callbacks import custom_event_listeners, tracer_watching


class _Tracer(BaseTracer):
    def _persist_run(self, run: Run) -> None:
        pass


class _Listener(BaseCallbackHandler):
    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        pass


class _AsyncListener(AsyncCallbackHandler):
    async def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        pass


class _Deaf(_Listener):
    ignore_custom_event = True


def test_only_a_handler_that_receives_custom_events_is_a_listener() -> None:
    assert not custom_event_listeners({"callbacks": None})
    assert not custom_event_listeners({"callbacks": [_Tracer()]})  # no on_custom_event
    assert not custom_event_listeners({"callbacks": [_Deaf()]})
    assert custom_event_listeners({"callbacks": [_Tracer(), _Listener()]})
    assert custom_event_listeners({"callbacks": [_AsyncListener()]})
    inherited = CallbackManager(handlers=[], inheritable_handlers=[_Listener()])
    assert custom_event_listeners({"callbacks": inherited})
    assert not custom_event_listeners({"callbacks": CallbackManager(handlers=[])})


def test_a_tracer_watches_and_unreadable_callbacks_count_as_watching() -> None:
    assert tracer_watching({"callbacks": [_Tracer()]})
    assert not tracer_watching({"callbacks": CallbackManager(handlers=[])})
    assert tracer_watching({"callbacks": object()})  # type: ignore[typeddict-item]
    assert custom_event_listeners({"callbacks": object()})  # type: ignore[typeddict-item]
