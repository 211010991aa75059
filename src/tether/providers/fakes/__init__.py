"""Fake upstream servers for tests: real HTTP/SSE servers on 127.0.0.1 that speak each provider's wire format,
play a script deterministically and record what they receive.

Example::

    with FakeChatCompletions(script=[{"text": "Hello!"}], api_key="test-key") as fake:
        settings = Settings(
            providers={"local": {"kind": "chat-completions", "base_url": fake.base_url, "api_key_env": "KEY"}},
            routes=[{"model": "local-*", "provider": "local"}],
        )
        ...  # run tether against it, then inspect fake.requests
"""

from tether.providers.fakes.anthropic import FakeAnthropic
from tether.providers.fakes.base import FakeCall, FakeTurn, FakeUpstream, PrefixCache, RecordedRequest
from tether.providers.fakes.chat_completions import FakeChatCompletions
from tether.providers.fakes.openai_responses import FakeResponsesUpstream, RecordedCreate

__all__ = [
    "FakeAnthropic",
    "FakeCall",
    "FakeChatCompletions",
    "FakeResponsesUpstream",
    "FakeTurn",
    "FakeUpstream",
    "PrefixCache",
    "RecordedCreate",
    "RecordedRequest",
]
