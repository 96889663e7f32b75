"""Purpose-bound sessions: the one door through which every interface reaches personal data and
changes governance state.

`ws.session(token_or_principal, purpose)` authenticates the caller (an API token, or a principal name
for trusted in-process callers such as the workspace owner's CLI) and binds a declared purpose. Each
operation is one named method that authorises (app/core.py), validates, acts and records, in that
order; refusals record access.denied. The operations live by area in app/ops/.
"""

from __future__ import annotations

from complai.app.core import ALL, SessionCore
from complai.app.ops.access import AccessOps
from complai.app.ops.admin import AdminOps
from complai.app.ops.compliance import ComplianceOps
from complai.app.ops.data import DataOps
from complai.app.ops.external import ExternalOps
from complai.app.ops.federated import FederatedOps
from complai.app.ops.frames import FrameOps
from complai.app.ops.jobs import JobOps
from complai.app.ops.lakedeid import LakeDeidOps
from complai.app.ops.ledger import LedgerOps
from complai.app.ops.portal import PortalOps
from complai.app.ops.privacy import PrivacyOps
from complai.app.ops.rights import RightsOps

__all__ = ["ALL", "Session"]


class Session(
    PortalOps,
    DataOps,
    ExternalOps,
    LakeDeidOps,
    FrameOps,
    RightsOps,
    PrivacyOps,
    ComplianceOps,
    AdminOps,
    AccessOps,
    FederatedOps,
    LedgerOps,
    JobOps,
    SessionCore,
):
    """A principal acting for one purpose; every operation is checked against the policy."""
