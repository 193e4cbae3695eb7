"""The OpenAI-compatible engine, through the real `openai` client, against a chat-completions server on 127.0.0.1."""

import socket
import time

import pytest

from gradkit_textgrad import (ChatServer, EngineError, OpenAICompatibleEngine, ScriptedEngine, TextLoss, TGD,
                              Variable)
from gradkit_textgrad import prompts as P


def scripted():
    return ScriptedEngine([
        (lambda p, s: s == P.BACKWARD_SYSTEM_PROMPT, "Say 4."),
        (lambda p, s: s is not None and "IMPROVED_VARIABLE" in s, "<IMPROVED_VARIABLE>4</IMPROVED_VARIABLE>"),
        (r".*", lambda p, s: f"echo[{s}]:{p}"),
    ])


def test_roundtrip_and_a_textgrad_step_over_http():
    inner = scripted()
    with ChatServer(inner) as srv:
        eng = OpenAICompatibleEngine("scripted", base_url=srv.base_url, timeout=5, max_retries=0)
        assert eng("hello", system_prompt="sys") == "echo[sys]:hello"
        assert inner.calls[-1] == ("sys", "hello"), "system and user messages must arrive as sent"
        x = Variable("5", role_description="answer to 2+2")
        TextLoss("Evaluate the answer", eng)(x).backward(eng)
        assert x.grad_text == "Say 4."
        TGD([x], eng).step()
        assert x.value == "4"
        assert srv.requests == 4


def test_retries_recover_from_server_errors():
    inner = scripted()
    with ChatServer(inner, fail_first=2, fail_status=503) as srv:
        eng = OpenAICompatibleEngine("scripted", base_url=srv.base_url, timeout=5, max_retries=2)
        assert eng("q") .startswith("echo")
        assert srv.requests == 3
    with ChatServer(inner, fail_first=5, fail_status=503) as srv:
        eng = OpenAICompatibleEngine("scripted", base_url=srv.base_url, timeout=5, max_retries=1)
        with pytest.raises(EngineError, match="HTTP 503"):
            eng("q")
        assert srv.requests == 2, "one try and one retry"


def test_client_error_is_not_retried_and_is_reported():
    with ChatServer(scripted(), fail_first=10, fail_status=400) as srv:
        eng = OpenAICompatibleEngine("scripted", base_url=srv.base_url, timeout=5, max_retries=3)
        with pytest.raises(EngineError, match="HTTP 400"):
            eng("q")
        assert srv.requests == 1


def test_engine_failure_inside_the_server_is_an_error():
    with ChatServer(ScriptedEngine([("only-this", "x")])) as srv:   # no rule matches -> the server answers 500
        eng = OpenAICompatibleEngine("scripted", base_url=srv.base_url, timeout=5, max_retries=0)
        with pytest.raises(EngineError, match="HTTP 500.*no rule matches"):
            eng("something else")


def test_timeout():
    with ChatServer(scripted(), delay=1.5) as srv:
        eng = OpenAICompatibleEngine("scripted", base_url=srv.base_url, timeout=0.3, max_retries=0)
        t = time.perf_counter()
        with pytest.raises(EngineError, match="timed out"):
            eng("q")
        assert time.perf_counter() - t < 1.4


def test_unreachable_endpoint():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    eng = OpenAICompatibleEngine("m", base_url=f"http://127.0.0.1:{port}/v1", timeout=2, max_retries=0)
    with pytest.raises(EngineError, match="cannot reach"):
        eng("q")


def test_configuration_from_environment_and_bad_settings(monkeypatch):
    with ChatServer(scripted()) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        eng = OpenAICompatibleEngine("scripted", timeout=5, max_retries=0)
        assert eng.base_url == srv.base_url and eng("hi").endswith(":hi")
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ValueError, match="API key"):
        OpenAICompatibleEngine("m", base_url="https://api.example.com/v1")
    for bad in (dict(timeout=0), dict(timeout=float("nan")), dict(max_retries=-1), dict(temperature=float("inf"))):
        with pytest.raises(ValueError):
            OpenAICompatibleEngine("m", base_url="http://127.0.0.1:9/v1", **bad)
