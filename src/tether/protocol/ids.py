"""Unguessable identifiers with the Responses API's prefixes."""

import secrets


def new_id(prefix: str) -> str:
    """Return ``prefix_`` followed by 128 random bits in hex (e.g. ``resp_3f…``)."""
    return f"{prefix}_{secrets.token_hex(16)}"


def response_id() -> str:
    return new_id("resp")


def message_id() -> str:
    return new_id("msg")


def function_call_id() -> str:
    return new_id("fc")


def call_id() -> str:
    return new_id("call")


def reasoning_id() -> str:
    return new_id("rs")
