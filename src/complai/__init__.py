"""complai: make AI on personal data provably compliant."""

from complai.app.workspace import Workspace
from complai.errors import (
    AlreadyExists,
    AuthenticationFailed,
    BudgetExhausted,
    ComplaiError,
    ConsentMissing,
    IntegrityError,
    InvalidInput,
    NotFound,
    PolicyDenied,
    WorkspaceError,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "AuthenticationFailed",
    "BudgetExhausted",
    "ComplaiError",
    "ConsentMissing",
    "IntegrityError",
    "InvalidInput",
    "NotFound",
    "PolicyDenied",
    "Workspace",
    "WorkspaceError",
    "__version__",
]
