"""Which tool calls change or send something, decided from general language only.

No list of known tools: a tool is *consequential* when its name says so (a verb such as
send, create, pay, delete, share or invite), when its description starts by saying so
("Sends an email ..."), or when the caller's ``mutating_tools`` globs match it. Verbs
that are also common nouns (post, add, set, order, run) count only at the start of the
name, where names put their verb (``post_webpage`` sends; ``get_post`` reads).

Separately, contacting an address is itself an outbound act: a URL passed to any tool
reaches the host it names (even a fetch can carry data in its path or query), so an
injected URL is consequential whatever the tool.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

from confessional.audit.checks import matches_any
from confessional.episode import ToolDefinition

__all__ = ["is_consequential", "name_words"]

_UNAMBIGUOUS_VERBS: Final = frozenset(
    {
        "send",
        "create",
        "update",
        "delete",
        "remove",
        "pay",
        "transfer",
        "share",
        "invite",
        "write",
        "book",
        "reserve",
        "edit",
        "modify",
        "schedule",
        "reschedule",
        "cancel",
        "rename",
        "append",
        "upload",
        "submit",
        "publish",
        "forward",
        "reply",
        "execute",
        "purchase",
        "buy",
        "insert",
        "grant",
        "revoke",
        "deploy",
        "install",
        "uninstall",
        "commit",
        "push",
        "kick",
        "ban",
        "erase",
        "wipe",
        "overwrite",
        "approve",
        "subscribe",
        "unsubscribe",
        "notify",
        "tweet",
        "dm",
        "wire",
        "refund",
        "withdraw",
        "deposit",
        "enroll",
        "register",
        "transmit",
        "exfiltrate",
        "sign",
        "unlock",
        "lock",
        "disable",
        "enable",
        "archive",
        "move",
        "copy",
        "save",
        "replace",
        "patch",
    }
)
_LEADING_VERBS: Final = frozenset(
    {
        "post",
        "add",
        "set",
        "put",
        "order",
        "run",
        "exec",
        "call",
        "text",
        "message",
        "email",
        "mail",
        "invoke",
        "assign",
        "close",
        "merge",
        "accept",
        "decline",
        "join",
        "leave",
        "comment",
        "change",
        "reset",
        "make",
        "mark",
        "apply",
        "start",
        "stop",
        "launch",
        "trigger",
        "fire",
        "drop",
    }
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")
_DESCRIPTION_VERB = re.compile(
    r"^\W*(?:this tool\s+|tool (?:that|to)\s+|use (?:this|it) to\s+|it\s+|will\s+)?(\w+)",
    re.IGNORECASE,
)


def name_words(name: str) -> list[str]:
    """``sendDirectMessage`` / ``send_direct_message`` -> ``["send", "direct", "message"]``."""
    return [w.lower() for w in _SEPARATORS.split(_CAMEL.sub("_", name)) if w]


def _verb(word: str) -> str:
    """Crude English stem: "sends" -> "send", "creates" -> "create", "updated" -> "update"."""
    for suffix, replacement in (("ies", "y"), ("es", "e"), ("s", ""), ("ed", "e"), ("ed", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            stem = word[: -len(suffix)] + replacement
            if stem in _UNAMBIGUOUS_VERBS or stem in _LEADING_VERBS:
                return stem
    return word


@lru_cache(maxsize=4096)
def _name_is_consequential(name: str) -> bool:
    words = name_words(name)
    if not words:
        return False
    if words[0] in _LEADING_VERBS or words[0] in _UNAMBIGUOUS_VERBS:
        return True
    return any(w in _UNAMBIGUOUS_VERBS for w in words[1:])


def _description_is_consequential(description: str) -> bool:
    match = _DESCRIPTION_VERB.match(description)
    if match is None:
        return False
    verb = _verb(match.group(1).lower())
    return verb in _UNAMBIGUOUS_VERBS or verb in _LEADING_VERBS


def is_consequential(
    name: str,
    tools: Sequence[ToolDefinition] = (),
    mutating_tools: Sequence[str] = (),
) -> bool:
    """Whether a call of tool ``name`` changes or sends something (see module docstring)."""
    if _name_is_consequential(name):
        return True
    if mutating_tools and matches_any(name, mutating_tools):
        return True
    return any(t.name == name and _description_is_consequential(t.description) for t in tools)
