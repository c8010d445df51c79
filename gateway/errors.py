"""Typed errors of the gateway. Each carries the question id it concerns (when known) and the
wire error code it becomes, so the pipeline turns any of them into an ErrorReply without guessing.
"""

from __future__ import annotations

from models.errors import ErrorCode


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL
    retryable: bool = False

    def __init__(self, message: str, *, question_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.question_id = question_id

    def with_question(self, question_id: str | None) -> GatewayError:
        """Attach the question id where the raiser (e.g. the worker client) did not know it."""
        if self.question_id is None:
            self.question_id = question_id
        return self


class WorkerError(GatewayError):
    """The model worker could not produce a result."""

    code = ErrorCode.WORKER_FAILED
    retryable = True


class WorkerCrashed(WorkerError):
    """The worker process died while serving the request (exit code or signal in the message)."""


class WorkerOOMKilled(WorkerCrashed):
    """The kernel killed the worker for exceeding its memory limit."""

    code = ErrorCode.WORKER_OOM


class WorkerTimeout(WorkerError):
    """The worker did not answer within the request timeout; it has been replaced."""

    code = ErrorCode.WORKER_TIMEOUT


class WorkerUnavailable(WorkerError):
    """The worker is not running (starting, or its restart budget is spent)."""

    code = ErrorCode.WORKER_UNAVAILABLE


class ContextOverflow(GatewayError):
    """The prompt does not fit the model's context window even without retrieved context."""

    code = ErrorCode.QUESTION_TOO_LONG

    def __init__(
        self, message: str, *, prompt_tokens: int, limit: int, question_id: str | None = None
    ) -> None:
        super().__init__(message, question_id=question_id)
        self.prompt_tokens = prompt_tokens
        self.limit = limit


class ModelNotFound(GatewayError):
    """A configured or bundled model file is missing; the message says how to install it."""


class ModelUnusable(ModelNotFound):
    """A configured model file exists but cannot serve: not GGUF, no chat template, or too large
    for the memory the worker may use. The message says what to change."""


class KnowledgeBaseError(GatewayError):
    """The knowledge base cannot be opened or is incompatible with the embedding model."""
