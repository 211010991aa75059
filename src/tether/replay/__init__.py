"""``tether replay``: a chain as a transcript, as its equivalent stateless request, or re-run on another route."""

from tether.replay.chain import ChainTurn, load_chain
from tether.replay.transcript import as_request, transcript_json, transcript_text

__all__ = ["ChainTurn", "as_request", "load_chain", "transcript_json", "transcript_text"]
