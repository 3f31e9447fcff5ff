"""The LLM layers' errors: every failure the gate turns into a fail-closed verdict derives from :class:`LlmError`."""

from __future__ import annotations

from fxgate.engine.core.errors import FxgateError

__all__ = ["LlmError", "ModelFileError"]


class LlmError(FxgateError):
    """An LLM-layer failure; the gate turns it into a fail-closed verdict with this message as the reason."""


class ModelFileError(LlmError, ValueError):
    """A model file that is missing, not GGUF, corrupt, or not the expected one."""
