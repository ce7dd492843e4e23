"""Stage 4, postflight: the agent confirms what it applied; its position advances."""

from hosts.services import PostflightReport, host_postflight, host_register

from .base import SyncRequest, sync_stage


@sync_stage("PostflightRequest", "PostflightResponse")
def postflight(sync: SyncRequest) -> dict:
    host = host_register(machine_id=sync.machine_id, enrollment=sync.enrollment)
    message = sync.message
    host_postflight(
        host=host,
        report=PostflightReport(
            rules_received=message.get("rules_received", 0),
            rules_processed=message.get("rules_processed", 0),
            sync_type=message.get("sync_type", ""),
            rules_hash=message.get("rules_hash", ""),
        ),
    )
    return {}
