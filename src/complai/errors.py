"""One error hierarchy for the library, the CLI and the API.

Each error carries the CLI exit code (2: the request was refused or malformed, 1: a check failed)
and the HTTP status the API maps it to. Messages are one line and never contain secrets or personal data.
"""

from __future__ import annotations


class ComplaiError(Exception):
    """Base of every error complai raises on purpose."""

    exit_code: int = 2
    http_status: int = 500
    title: str = "complai error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def problem(self) -> dict[str, object]:
        """RFC 9457 problem document for the API."""
        return {"type": "about:blank", "title": self.title, "status": self.http_status, "detail": self.message}


class InvalidInput(ComplaiError):
    """The request is malformed: unknown name, wrong type, out-of-range value."""

    http_status = 400
    title = "invalid input"


class NotFound(ComplaiError):
    http_status = 404
    title = "not found"


class AlreadyExists(ComplaiError):
    http_status = 409
    title = "already exists"


class AuthenticationFailed(ComplaiError):
    http_status = 401
    title = "authentication failed"


class PolicyDenied(ComplaiError):
    """The principal may not perform this action for this purpose."""

    http_status = 403
    title = "policy denied"


class ConsentMissing(PolicyDenied):
    """No live consent or other lawful basis covers this processing."""

    title = "consent missing"


class BudgetExhausted(ComplaiError):
    """The privacy budget would be overspent."""

    http_status = 409
    title = "privacy budget exhausted"


class IntegrityError(ComplaiError):
    """Data failed an integrity check: tampered ciphertext, ledger, checkpoint, backup or report."""

    exit_code = 1
    http_status = 422
    title = "integrity check failed"


class WorkspaceError(ComplaiError):
    """The workspace is missing, unreadable, corrupt or of an unsupported schema."""

    http_status = 500
    title = "workspace error"


class ConcurrencyError(ComplaiError):
    """A concurrent writer held a lock for too long; nothing was written."""

    http_status = 503
    title = "busy"


class RateLimited(ComplaiError):
    """Too many attempts (failed logins, portal submissions) in a window; try again later."""

    http_status = 429
    title = "too many requests"


class Cancelled(ComplaiError):
    """A job was cancelled by its owner before it finished; what it had done was rolled back."""

    http_status = 409
    title = "cancelled"
