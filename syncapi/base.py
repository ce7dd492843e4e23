"""What every sync stage shares: authentication, body limits, decoding, errors, encoding.

A stage is a function `handler(sync: SyncRequest) -> dict` wrapped by `sync_stage`; it gets the
decoded request message and returns the response message, both as dicts keyed by proto field
names (syncapi/codec.py). Everything a client can get wrong ends here as a 4xx JSON answer,
before anything is written.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from events.services import InvalidEvent
from hosts.errors import HostsError, MachineBoundToOtherEnrollment
from hosts.models import MACHINE_ID_PATTERN, Enrollment, Host
from hosts.selectors import SyncConfiguration, SyncContext, sync_context
from hosts.services import host_register
from hosts.settings_cache import settings_snapshot
from rules.errors import RulesError

from . import codec
from .codec import JSON, ProtocolError, bad_request
from .ratelimit import limiter

logger = logging.getLogger("santaadmin.sync")

_MACHINE_ID = re.compile(MACHINE_ID_PATTERN)
_MAX_MACHINE_ID = 128
DOCTOR_MACHINE_ID = "santactl-doctor-test"
RETRY_AFTER_SECONDS = 30


@dataclass
class SyncRequest:
    http: HttpRequest
    machine_id: str
    context: SyncContext
    message: dict
    secret: str = ""
    cert_issuer: str = ""

    @property
    def enrollment(self) -> Enrollment:
        return self.context.enrollment

    def configuration(self, host: Host) -> SyncConfiguration:
        """The host's effective configuration, from the sync context and memory."""
        context = self.context
        return settings_snapshot(context.settings_token).configuration(
            context.tag_ids,
            context.host_profile_ids,
            enrollment_mode=context.enrollment.client_mode,
            host_mode_override=host.client_mode_override,
        )

    def host(self) -> Host:
        """The host of this machine id, registered on first contact (with its enrollment's
        tags). A machine id stays bound to the enrollment that registered it: another
        enrollment's secret cannot read or write its data (moving a host is an operator
        action)."""
        context = self.context
        if context.host is not None:
            return context.host
        if context.bound_elsewhere:
            raise MachineBoundToOtherEnrollment(
                f"Machine {self.machine_id} is registered with another enrollment."
            )
        host = host_register(machine_id=self.machine_id, enrollment=context.enrollment)
        # A new host: read its memberships and revision again (the registration wrote them).
        self.context = (
            sync_context(
                machine_id=self.machine_id, secret=self.secret, cert_issuer=self.cert_issuer
            )
            or context
        )
        return self.context.host or host


def json_error(status: int, code: str, detail: str, **headers) -> HttpResponse:
    response = HttpResponse(
        orjson.dumps({"error": code, "detail": detail}), status=status, content_type=JSON
    )
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _credentials(request: HttpRequest) -> tuple[str, str]:
    """(bearer secret, client-certificate issuer): `Authorization: Bearer <secret>` (set on the
    Mac with SyncExtraHeaders), or else a client-certificate issuer vouched for by the TLS
    proxy. A bearer secret, when sent, is always the one checked."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, secret = header.partition(" ")
    if header and scheme.lower() == "bearer" and secret.strip():
        return secret.strip(), ""
    if settings.SYNC_CLIENT_CERT_HEADER:
        meta_name = "HTTP_" + settings.SYNC_CLIENT_CERT_HEADER.upper().replace("-", "_")
        issuer = request.META.get(meta_name, "").strip()
        if issuer:
            return "", issuer
    raise ProtocolError(
        401,
        "authentication_required",
        "Send the enrollment secret as 'Authorization: Bearer <secret>' (SyncExtraHeaders).",
    )


def _authenticate(request: HttpRequest, machine_id: str) -> SyncRequest:
    secret, issuer = _credentials(request)
    context = sync_context(machine_id=machine_id, secret=secret, cert_issuer=issuer)
    if context is None:
        if secret:
            raise ProtocolError(401, "invalid_secret", "Unknown or revoked enrollment secret.")
        raise ProtocolError(
            401,
            "authentication_required",
            "Send the enrollment secret as 'Authorization: Bearer <secret>' (SyncExtraHeaders).",
        )
    return SyncRequest(request, machine_id, context, {}, secret, issuer)


def _check_machine_id(machine_id: str) -> None:
    if len(machine_id) > _MAX_MACHINE_ID:
        raise bad_request(
            f"The machine id is longer than {_MAX_MACHINE_ID} characters.", "invalid_machine_id"
        )
    if not _MACHINE_ID.fullmatch(machine_id):
        raise bad_request(
            "The machine id may contain letters, digits and . _ : @ + - only.",
            "invalid_machine_id",
        )


def _read_body(request: HttpRequest) -> bytes:
    limit = settings.SYNC_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise bad_request("Invalid Content-Length.") from None
    if declared > limit:
        raise ProtocolError(
            413, "body_too_large", f"Body exceeds SYNC_MAX_BODY_BYTES ({limit} bytes)."
        )
    data = request.read(limit + 1)
    if len(data) > limit:
        raise ProtocolError(
            413, "body_too_large", f"Body exceeds SYNC_MAX_BODY_BYTES ({limit} bytes)."
        )
    return data


def sync_stage(request_message: str, response_message: str):
    """Turn `handler(SyncRequest) -> dict` into a Django view for one sync stage."""

    def decorator(handler: Callable[[SyncRequest], dict]):
        @csrf_exempt
        @functools.wraps(handler)
        def view(request: HttpRequest, machine_id: str) -> HttpResponse:
            if request.method != "POST":
                return json_error(
                    405, "method_not_allowed", "Sync endpoints take POST.", Allow="POST"
                )
            try:
                _check_machine_id(machine_id)
                # Before any database work; a refused request changes nothing and counts
                # against nothing (syncapi.ratelimit). Santa retries a 429 (§5.2).
                refusal = limiter.refuse(request, machine_id)
                if refusal is not None:
                    return json_error(
                        429,
                        "rate_limited",
                        refusal.detail,
                        Retry_After=str(refusal.retry_after),
                    )
                fmt = codec.body_format(request.META.get("CONTENT_TYPE"))
                sync = _authenticate(request, machine_id)
                raw = _read_body(request)
                if machine_id == DOCTOR_MACHINE_ID:
                    # `santactl doctor` posts an empty preflight to check reachability (§1);
                    # the id is reserved and never registered as a host.
                    if request_message != "PreflightRequest":
                        raise bad_request(
                            f"{DOCTOR_MACHINE_ID} is reserved for santactl doctor.",
                            "invalid_machine_id",
                        )
                    return HttpResponse(codec.encode(response_message, {}, fmt), content_type=fmt)
                data = codec.decompress(raw, request.META.get("HTTP_CONTENT_ENCODING"))
                if not data and fmt == codec.PROTOBUF:
                    message = {}
                else:
                    message = codec.decode(request_message, data, fmt)
                body_machine_id = message.get("machine_id")
                if body_machine_id and body_machine_id != machine_id:
                    raise bad_request(
                        f"Body machine_id {body_machine_id!r} does not match the URL.",
                        "machine_id_mismatch",
                    )
                sync.message = message
                answer = handler(sync)
                return HttpResponse(codec.encode(response_message, answer, fmt), content_type=fmt)
            except ProtocolError as exc:
                if exc.status == 401:
                    return json_error(
                        401, exc.code, exc.detail, WWW_Authenticate='Bearer realm="santa-sync"'
                    )
                return json_error(exc.status, exc.code, exc.detail)
            except (HostsError, RulesError, InvalidEvent) as exc:
                return json_error(exc.status, exc.code, exc.detail)
            except (OperationalError, InterfaceError) as exc:
                logger.warning("Database unavailable during %s: %s", request.path, exc)
                return json_error(
                    503,
                    "database_unavailable",
                    "The database is unavailable; retry later.",
                    Retry_After=str(RETRY_AFTER_SECONDS),
                )
            except DatabaseError:
                logger.exception("Database error during %s", request.path)
                return json_error(
                    503,
                    "database_error",
                    "Temporary database error.",
                    Retry_After=str(RETRY_AFTER_SECONDS),
                )

        return view

    return decorator
