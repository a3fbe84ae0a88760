"""One model loader for the library and the CLI.

``load_chat_model`` turns a model string into a ``BaseChatModel`` with errors that say what
is missing: the provider package (named with its extra where confessional has one, with its
pip package otherwise), the API key, or the spelling. ``open_chat_model`` does the same as a
context manager and also understands ``"local"``, the managed open-weight model that needs a
server started and stopped around its use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from confessional.errors import ConfigurationError, MissingExtraError

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = ["LOCAL", "load_chat_model", "open_chat_model"]

LOCAL = "local"
"""The model string of the managed local open-weight model (see ``confessional.local_model``)."""

# Providers confessional has an extra for; any other init_chat_model provider works too.
_EXTRAS: dict[str, str] = {"openai": "openai", "anthropic": "anthropic"}

# The API key each provider reads, checked up front so that a missing key is one clear
# error at load time instead of a failure at the first call.
_KEY_VARIABLES: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "google_genai": "GOOGLE_API_KEY",
    "mistralai": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "xai": "XAI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "fireworks": "FIREWORKS_API_KEY",
    "together": "TOGETHER_API_KEY",
}


def _known_providers() -> dict[str, str]:
    """init_chat_model's providers and the pip package each needs (best effort: the table
    is private to langchain, so an unreadable one only costs the nicer messages)."""
    try:
        from langchain.chat_models.base import _BUILTIN_PROVIDERS
    except ImportError:  # pragma: no cover - langchain moved it
        return {}
    return {
        name: entry[0].split(".")[0].replace("_", "-") for name, entry in _BUILTIN_PROVIDERS.items()
    }


def _provider(spec: str) -> str:
    if ":" not in spec or not spec.split(":", 1)[1]:
        raise ConfigurationError(
            f"model {spec!r} is not of the form provider:model (e.g. openai:gpt-4.1-mini), "
            f"{LOCAL!r} or 'scripted'"
        )
    return spec.split(":", 1)[0]


def load_chat_model(spec: str, *, base_url: str | None = None, **kwargs: Any) -> BaseChatModel:
    """``init_chat_model(spec)`` with one-line errors for the usual mistakes.

    Args:
        spec: ``provider:model``, for example ``"openai:gpt-4.1-mini"``.
        base_url: an OpenAI-compatible server (llama.cpp, Ollama, vLLM, LM Studio). Without it
            ``OPENAI_BASE_URL`` applies as usual. A local server needs no real key, so a
            placeholder is used when ``OPENAI_API_KEY`` is unset.
        kwargs: passed to ``init_chat_model`` (temperature, max_tokens, ...).

    Raises:
        ConfigurationError: a malformed string, an unknown provider or a missing API key.
        MissingExtraError: the provider's package is not installed.
    """
    provider = _provider(spec)
    known = _known_providers()
    if known and provider not in known:
        raise ConfigurationError(
            f"unknown model provider {provider!r} in {spec!r}; known: {', '.join(sorted(known))}"
        )
    package = known.get(provider, f"langchain-{provider}")
    key_variable = _KEY_VARIABLES.get(provider)
    if base_url is not None:
        if provider != "openai":
            raise ConfigurationError(
                f"--base-url needs an openai:NAME model (an OpenAI-compatible server), got {spec!r}"
            )
        kwargs = {"api_key": os.environ.get("OPENAI_API_KEY") or "local", **kwargs}
        kwargs["base_url"] = base_url
    elif _key_missing(provider, key_variable, kwargs):
        raise ConfigurationError(
            f"model {spec!r} needs an API key: set {key_variable}"
            + (" (or OPENAI_BASE_URL for a local server)" if provider == "openai" else "")
        )
    from langchain.chat_models import init_chat_model

    try:
        model: BaseChatModel = init_chat_model(spec, **kwargs)
    except ImportError as exc:
        raise MissingExtraError(_EXTRAS.get(provider), f"model {spec!r}", package) from exc
    except ValueError as exc:  # unknown provider, bad parameters
        raise ConfigurationError(f"could not create model {spec!r}: {_first_line(exc)}") from exc
    return model


@contextmanager
def open_chat_model(
    spec: str | BaseChatModel, *, base_url: str | None = None
) -> Iterator[BaseChatModel]:
    """Yield a ready chat model for ``spec``; ``"local"`` starts and stops the local server."""
    if not isinstance(spec, str):
        yield spec
        return
    if spec == LOCAL:
        from confessional.local_model import local_chat_model

        with local_chat_model() as model:
            yield model
        return
    yield load_chat_model(spec, base_url=base_url)


def _key_missing(provider: str, key_variable: str | None, kwargs: dict[str, Any]) -> bool:
    if key_variable is None or os.environ.get(key_variable):
        return False
    if any(kwargs.get(name) for name in ("api_key", "openai_api_key", "anthropic_api_key")):
        return False
    return not (provider == "openai" and os.environ.get("OPENAI_BASE_URL"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
