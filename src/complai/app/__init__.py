"""The front door: the workspace (composition root), the session (the one door every interface uses)
and the orchestration that spans services (backups, federated organisations)."""
