"""Upstream models behind one interface, and the built-in scripted model."""

from tether.providers.anthropic import AnthropicProvider
from tether.providers.base import Provider, ProviderRequest, ProviderResolver
from tether.providers.chat_completions import ChatCompletionsProvider
from tether.providers.http_upstream import UpstreamOptions
from tether.providers.openai_responses import OpenAIResponsesProvider
from tether.providers.raw_forward import RawForwarding, RawReply, RawRequest, raw_forwarder
from tether.providers.router import ProviderRouter, Route
from tether.providers.scripted import Script, ScriptedProvider, ScriptedTiming, load_scripts

__all__ = [
    "AnthropicProvider",
    "ChatCompletionsProvider",
    "OpenAIResponsesProvider",
    "Provider",
    "ProviderRequest",
    "ProviderResolver",
    "ProviderRouter",
    "RawForwarding",
    "RawReply",
    "RawRequest",
    "Route",
    "Script",
    "ScriptedProvider",
    "ScriptedTiming",
    "UpstreamOptions",
    "load_scripts",
    "raw_forwarder",
]
