"""How agents authenticate: bearer secrets, and a client-certificate issuer vouched for by the
TLS proxy (SYNC_CLIENT_CERT_HEADER)."""

import pytest

from hosts.models import Enrollment, Host
from hosts.services import enrollment_revoke
from tests.agent import SyncFailed

ISSUER = "CN=Example Santa Clients CA,O=Example Inc."


def _with_header(agent, name, value):
    headers = agent.headers

    def patched():
        return {**headers(), name: value}

    agent.headers = patched
    return agent


def test_bearer_scheme_is_case_insensitive(make_agent, enrollment):
    agent = make_agent()
    _with_header(agent, "Authorization", f"bearer {enrollment[1]}")
    agent.sync()
    assert Host.objects.filter(machine_id=agent.machine_id).exists()


def test_secret_is_stored_hashed(enrollment):
    stored = Enrollment.objects.get(pk=enrollment[0].pk)
    assert enrollment[1] not in (stored.secret_hash, stored.secret_prefix)
    assert len(stored.secret_hash) == 64


def test_secrets_are_compared_in_constant_time(make_agent, enrollment, monkeypatch):
    """The row is found by the secret's hash; the hash read back is then compared with
    hmac.compare_digest, whose time does not depend on where two values first differ."""
    import hmac

    from hosts import selectors

    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(selectors.hmac, "compare_digest", spy)
    make_agent().preflight()
    stored = Enrollment.objects.get(pk=enrollment[0].pk).secret_hash
    assert (stored, selectors.hash_secret(enrollment[1])) in compared


def test_revocation_is_immediate(agent, enrollment):
    agent.sync()
    enrollment_revoke(name=enrollment[0].name)
    with pytest.raises(SyncFailed) as failure:
        agent.sync()
    assert failure.value.status == 401


def test_client_certificate_issuer_admits_without_secret(make_agent, enrollment, settings):
    settings.SYNC_CLIENT_CERT_HEADER = "X-SSL-Client-Issuer-DN"
    Enrollment.objects.filter(pk=enrollment[0].pk).update(client_cert_issuer=ISSUER)
    agent = _with_header(make_agent(secret=None), "X-SSL-Client-Issuer-DN", ISSUER)
    agent.secret = None
    agent.sync()
    assert Host.objects.get(machine_id=agent.machine_id).enrollment_id == enrollment[0].pk


def test_unknown_issuer_is_refused(make_agent, enrollment, settings):
    settings.SYNC_CLIENT_CERT_HEADER = "X-SSL-Client-Issuer-DN"
    Enrollment.objects.filter(pk=enrollment[0].pk).update(client_cert_issuer=ISSUER)
    agent = _with_header(make_agent(secret=None), "X-SSL-Client-Issuer-DN", "CN=Someone Else")
    agent.secret = None
    with pytest.raises(SyncFailed) as failure:
        agent.sync()
    assert failure.value.status == 401
    assert not Host.objects.exists()


def test_certificate_header_is_ignored_unless_configured(make_agent, enrollment, settings):
    settings.SYNC_CLIENT_CERT_HEADER = ""
    Enrollment.objects.filter(pk=enrollment[0].pk).update(client_cert_issuer=ISSUER)
    agent = _with_header(make_agent(secret=None), "X-SSL-Client-Issuer-DN", ISSUER)
    agent.secret = None
    with pytest.raises(SyncFailed) as failure:
        agent.sync()
    assert failure.value.status == 401


def test_a_wrong_secret_is_not_rescued_by_a_certificate(make_agent, enrollment, settings):
    settings.SYNC_CLIENT_CERT_HEADER = "X-SSL-Client-Issuer-DN"
    Enrollment.objects.filter(pk=enrollment[0].pk).update(client_cert_issuer=ISSUER)
    agent = _with_header(make_agent(secret="sa_wrong"), "X-SSL-Client-Issuer-DN", ISSUER)
    with pytest.raises(SyncFailed) as failure:
        agent.sync()
    assert failure.value.status == 401


def test_unauthenticated_answers_name_the_scheme(client, db):
    response = client.post("/sync/preflight/MAC-1", data=b"{}", content_type="application/json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="santa-sync"'


def test_doctor_id_is_reserved(make_agent):
    doctor = make_agent(machine_id="santactl-doctor-test")
    doctor.preflight()  # any preflight body: answered, never registered
    assert not Host.objects.exists()
    with pytest.raises(SyncFailed) as failure:
        doctor.upload_events([])
    assert failure.value.status == 400


def test_sync_urls_respect_allowed_hosts(agent, client, enrollment):
    response = client.post(
        f"/sync/preflight/{agent.machine_id}",
        data=b"{}",
        content_type="application/json",
        HTTP_HOST="evil.example.net",
        HTTP_AUTHORIZATION=f"Bearer {enrollment[1]}",
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_host"
    assert not Host.objects.exists()
