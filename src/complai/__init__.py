"""complai: make AI on personal data provably compliant.

`Workspace` is loaded on first use, so that importing a light part of the package (the CLI's
`--version` and `--help`, the errors) does not load the front door with pandas and SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from complai.app.workspace import Workspace

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


def __getattr__(name: str) -> Any:
    if name == "Workspace":
        # heavy: the front door loads pandas and SQLAlchemy; importing complai alone must not
        from complai.app.workspace import Workspace

        return Workspace
    raise AttributeError(f"module 'complai' has no attribute {name!r}")
