"""Stage 4, postflight: the agent confirms what it applied; its position advances."""

from hosts.services import PostflightReport, host_postflight

from .base import SyncRequest, sync_stage


@sync_stage("PostflightRequest", "PostflightResponse")
def postflight(sync: SyncRequest) -> dict:
    host = sync.host()
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
