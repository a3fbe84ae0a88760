"""Episodes from LangChain messages and from real AgentDojo transcripts (OpenAI format)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from tests.conftest import load_agentdojo

from confessional import build_request, extract_episode, to_messages
from confessional.testing import example_tools, tool_call_message

AGENTDOJO = load_agentdojo()


def test_both_agentdojo_files_are_complete() -> None:
    by_file: dict[str, int] = {}
    for name, _ in AGENTDOJO:
        by_file[name] = by_file.get(name, 0) + 1
    assert by_file == {
        "claude-3-5-sonnet-20241022.jsonl": 194,
        "gpt-4o-mini-2024-07-18.jsonl": 194,
    }


def _instruction_texts(raw: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in raw if m["role"] in ("system", "user") and m.get("content")]


@pytest.mark.parametrize("role", ["system", "user"])
def test_every_agentdojo_episode_converts_and_keeps_every_instruction(role: str) -> None:
    for name, record in AGENTDOJO:
        raw = record["messages"]
        episode = extract_episode(raw)
        expected_calls = sum(len(m.get("tool_calls") or []) for m in raw[episode.start :])
        assert len(episode.tool_calls) == expected_calls, (name, record["index"])
        request = build_request(episode, role=role)  # type: ignore[arg-type]
        sent = "\n".join(str(m.content) for m in request)
        for text in _instruction_texts(raw):
            assert text in sent, (name, record["index"])
        assert request[-1].type == ("system" if role == "system" else "human")


def test_agentdojo_tool_errors_and_null_content() -> None:
    errored = [
        (name, record)
        for name, record in AGENTDOJO
        if any(m["role"] == "tool" and m.get("error") for m in record["messages"])
    ]
    assert errored, "the data set has tool errors"
    for _, record in errored:
        episode = extract_episode(record["messages"])
        raw_errors = sum(
            1 for m in record["messages"][episode.start :] if m["role"] == "tool" and m.get("error")
        )
        assert sum(c.error for c in episode.tool_calls) == raw_errors
    null_content = [
        record
        for _, record in AGENTDOJO
        if any(m["role"] == "assistant" and m["content"] is None for m in record["messages"])
    ]
    assert null_content
    assert all(extract_episode(r["messages"]).has_tool_calls for r in null_content[:5])


def test_claude_thinking_blocks_stay_in_the_conversation() -> None:
    claude = [r for n, r in AGENTDOJO if n.startswith("claude")]
    with_thinking = next(
        r for r in claude if any("<thinking>" in str(m.get("content")) for m in r["messages"])
    )
    messages = to_messages(with_thinking["messages"])
    assert any("<thinking>" in str(m.content) for m in messages if isinstance(m, AIMessage))


def test_latest_turn_only_and_parallel_calls() -> None:
    first = tool_call_message(("run_tests", {}))
    parallel = tool_call_message(("write_file", {"path": "a", "content": "1"}), ("run_tests", {}))
    messages = [
        SystemMessage("be honest"),
        HumanMessage("turn one"),
        first,
        ToolMessage("1 failed", tool_call_id=first.tool_calls[0]["id"]),
        AIMessage("first answer"),
        HumanMessage("turn two"),
        parallel,
        ToolMessage("wrote", tool_call_id=parallel.tool_calls[0]["id"]),
        ToolMessage("boom", tool_call_id=parallel.tool_calls[1]["id"], status="error"),
        AIMessage("second answer"),
    ]
    episode = extract_episode(messages, tools=example_tools())
    assert episode.start == 5
    assert [c.name for c in episode.tool_calls] == ["write_file", "run_tests"]
    assert {c.round for c in episode.tool_calls} == {0}
    assert [c.error for c in episode.tool_calls] == [False, True]
    assert episode.final_answer == "second answer"
    sources = [i.source for i in episode.instructions]
    assert sources == ["system", "user", "user", "tool_definition", "tool_definition"]
    assert {t.name for t in episode.tools} == {"run_tests", "write_file"}


def test_openai_string_arguments_and_developer_role() -> None:
    episode = extract_episode(
        [
            {"role": "developer", "content": "never email"},
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"x": 1}'},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "g", "arguments": "{oops"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ]
    )
    assert episode.instructions[0].source == "developer"
    assert episode.tool_calls[0].args == {"x": 1}
    assert episode.tool_calls[1].args == {"__raw_arguments__": "{oops"}
    assert episode.tool_calls[1].result is None


def test_unknown_role_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown role 'robot'"):
        to_messages([{"role": "robot", "content": "beep"}])


# --- pairing without ids ---------------------------------------------------------------------


def _assistant(*calls: tuple[str, str]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": n, "arguments": {}}}
            for i, n in calls
        ],
    }


def test_calls_without_ids_pair_first_in_first_out_and_keep_empty_ids() -> None:
    episode = extract_episode(
        [
            {"role": "user", "content": "go"},
            _assistant(("", "read_a"), ("", "read_b")),
            {"role": "tool", "tool_call_id": "", "content": "A"},
            {"role": "tool", "tool_call_id": "", "content": "B"},
            _assistant(("", "read_c")),
            {"role": "tool", "content": "C"},
            {"role": "assistant", "content": "done"},
        ]
    )
    assert [(c.name, c.result) for c in episode.tool_calls] == [
        ("read_a", "A"),
        ("read_b", "B"),
        ("read_c", "C"),
    ]
    assert [c.id for c in episode.tool_calls] == ["", "", ""]  # never invented
    assert [c.evidence for c in episode.tool_calls] == ["call:0", "call:1", "call:2"]


def test_ids_pair_by_id_when_present_even_out_of_order() -> None:
    episode = extract_episode(
        [
            {"role": "user", "content": "go"},
            _assistant(("x", "read_a"), ("y", "read_b")),
            {"role": "tool", "tool_call_id": "y", "content": "B"},
            {"role": "tool", "tool_call_id": "x", "content": "A"},
        ]
    )
    assert [(c.name, c.result) for c in episode.tool_calls] == [("read_a", "A"), ("read_b", "B")]


def test_unanswered_call_does_not_take_a_later_reply() -> None:
    episode = extract_episode(
        [
            {"role": "user", "content": "go"},
            _assistant(("x", "read_a")),
            _assistant(("y", "read_b")),
            {"role": "tool", "tool_call_id": "y", "content": "B"},
        ]
    )
    assert [c.result for c in episode.tool_calls] == [None, "B"]


# --- scope ---------------------------------------------------------------------------------


def test_prompt_repeated_after_each_tool_reply_is_not_a_new_task() -> None:
    prompt = {"role": "user", "content": "Pay the bill."}
    episode = extract_episode(
        [
            prompt,
            _assistant(("1", "read_inbox")),
            {"role": "tool", "tool_call_id": "1", "content": "bill"},
            prompt,
            _assistant(("2", "send_money")),
            {"role": "tool", "tool_call_id": "2", "content": "sent"},
            {"role": "user", "content": "  pay the BILL. "},
            {"role": "assistant", "content": "Paid."},
        ]
    )
    assert episode.start == 0
    assert [c.name for c in episode.tool_calls] == ["read_inbox", "send_money"]


def test_repeated_prompt_while_the_task_is_open_is_not_a_new_task() -> None:
    episode = extract_episode(
        [
            ("user", "Pay the bill."),
            _assistant(("1", "read_inbox")),
            ("user", "Pay the bill."),  # no tool reply in between: a plain repeat
            _assistant(("2", "send_money")),
        ]
    )
    assert episode.start == 0
    assert len(episode.tool_calls) == 2


def test_new_message_after_an_answer_starts_a_new_task() -> None:
    base: list[Any] = [
        ("user", "Pay the bill."),
        _assistant(("1", "send_money")),
        {"role": "tool", "tool_call_id": "1", "content": "sent"},
        ("ai", "Paid."),
    ]
    for follow_up in ("Now email Bob.", "Pay the bill."):  # a repeat after an answer too
        episode = extract_episode([*base, ("user", follow_up), _assistant(("2", "send_email"))])
        assert episode.start == 4
        assert [c.name for c in episode.tool_calls] == ["send_email"]


def test_user_message_between_a_reply_and_the_next_call_is_an_interjection() -> None:
    episode = extract_episode(
        [
            ("user", "Pay the bill."),
            _assistant(("1", "read_inbox")),
            {"role": "tool", "tool_call_id": "1", "content": "bill"},
            ("user", "Hurry please."),
            _assistant(("2", "send_money")),
        ]
    )
    assert episode.start == 0
    assert [c.name for c in episode.tool_calls] == [
        "read_inbox",
        "send_money",
    ]


# --- message forms -------------------------------------------------------------------------


def test_every_langchain_message_form_and_openai_dicts_are_accepted() -> None:
    episode = extract_episode(
        [
            ("system", "be honest"),
            "fix it",  # a bare string is a human message
            {"type": "ai", "content": "", "tool_calls": [{"id": "1", "name": "f", "args": {}}]},
            {"role": "tool", "tool_call_id": "1", "content": "ok"},
            ["assistant", "fixed"],
        ]
    )
    assert [i.source for i in episode.instructions] == ["system", "user"]
    assert [(c.name, c.result) for c in episode.tool_calls] == [("f", "ok")]
    assert episode.final_answer == "fixed"
    assert extract_episode([("user", "fix")]).instructions[0].text == "fix"


def test_bad_message_forms_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="message 1: a message tuple must be"):
        to_messages([("user", "a"), ("user", "b", "c")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="message 0: a message dict needs a 'role'"):
        to_messages([{"content": "x"}])
    with pytest.raises(TypeError, match="message 0: expected a LangChain message"):
        to_messages([42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a single message"):
        to_messages("hello")  # type: ignore[arg-type]


def test_tool_definitions_follow_edits_and_do_not_keep_tools_alive() -> None:
    """Tool conversion is cached per live tool object, never at the cost of staleness."""
    import gc
    import weakref

    from langchain_core.tools import tool

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return key

    messages = [HumanMessage("go"), AIMessage("done")]
    first = extract_episode(messages, tools=[lookup])
    again = extract_episode(messages, tools=[lookup])
    assert first.tools == again.tools
    assert first.tools[0].description == "Look a key up."

    lookup.description = "Look a key up; never delete."
    edited = extract_episode(messages, tools=[lookup])
    assert edited.tools[0].description == "Look a key up; never delete."
    assert "never delete" in edited.instructions[-1].text

    as_dict = {"type": "function", "function": {"name": "raw", "description": "d"}}
    assert extract_episode(messages, tools=[as_dict]).tools[0].name == "raw"

    alive = weakref.ref(lookup)
    del lookup
    gc.collect()
    assert alive() is None
