"""Authentication as PVE does it: tickets with CSRF, API tokens, the 401 variants."""

from __future__ import annotations

import pytest
import requests
from proxmoxer import AuthenticationError, ProxmoxAPI, ResourceException

pytestmark = pytest.mark.lab


def test_ticket_login_returns_pve_shaped_ticket_and_no_cookie(emulator):
    answer = requests.post(
        emulator.url + "/access/ticket",
        data={"username": "root@pam", "password": emulator.password},
        verify=emulator.ca_path,
        timeout=10,
    )
    assert answer.status_code == 200
    assert "Set-Cookie" not in answer.headers
    data = answer.json()["data"]
    assert data["username"] == "root@pam"
    ticket, csrf = data["ticket"], data["CSRFPreventionToken"]
    assert ticket.startswith("PVE:root@pam:")
    stamp = ticket.split(":")[2]
    assert len(stamp) == 8 and stamp == stamp.upper()
    assert csrf.startswith(stamp + ":")
    assert len(csrf.split(":", 1)[1]) == 43


def test_realm_parameter_and_ticket_renewal(emulator):
    url = emulator.url + "/access/ticket"
    first = requests.post(
        url,
        data={"username": "root", "realm": "pam", "password": emulator.password},
        verify=emulator.ca_path,
        timeout=10,
    ).json()["data"]
    renewed = requests.post(
        url,
        data={"username": "root@pam", "password": first["ticket"]},
        verify=emulator.ca_path,
        timeout=10,
    )
    assert renewed.status_code == 200
    assert renewed.json()["data"]["ticket"].startswith("PVE:root@pam:")


def test_bad_password_is_401_authentication_failure(emulator):
    answer = requests.post(
        emulator.url + "/access/ticket",
        data={"username": "root@pam", "password": "wrong"},
        verify=emulator.ca_path,
        timeout=10,
    )
    assert (answer.status_code, answer.reason) == (401, "authentication failure")
    assert answer.json() == {"data": None}
    with pytest.raises(AuthenticationError):
        ProxmoxAPI(
            emulator.host,
            port=emulator.port,
            user="root@pam",
            password="wrong",
            verify_ssl=emulator.ca_path,
        )


def test_no_credentials_is_401_no_ticket_with_empty_body(emulator):
    answer = emulator.http("GET", "/version", headers={})
    assert (answer.status_code, answer.reason) == (401, "No ticket")
    assert answer.content == b""


def test_bad_token_is_401_authentication_failed(emulator):
    answer = emulator.http(
        "GET", "/version", headers={"Authorization": f"PVEAPIToken={emulator.token_id}=nope"}
    )
    assert (answer.status_code, answer.reason) == (401, "Authentication failed!")
    assert answer.content == b""


def test_token_with_space_separator_is_accepted(emulator):
    header = {"Authorization": f"PVEAPIToken {emulator.token_id}={emulator.token_secret}"}
    assert emulator.http("GET", "/version", headers=header).status_code == 200


def test_writes_with_ticket_need_the_csrf_token(emulator):
    login = emulator.api("ticket")
    ticket = login._backend.auth.pve_auth_ticket
    cookies = {"PVEAuthCookie": ticket}
    read = requests.get(
        emulator.url + "/cluster/nextid", cookies=cookies, verify=emulator.ca_path, timeout=10
    )
    assert read.status_code == 200
    write = requests.put(
        emulator.url + f"/nodes/{emulator.node}/qemu/9000/config",
        data={"description": "x"},
        cookies=cookies,
        verify=emulator.ca_path,
        timeout=10,
    )
    assert (write.status_code, write.reason) == (401, "Permission denied - invalid csrf token")
    bad_ticket = requests.get(
        emulator.url + "/version",
        cookies={"PVEAuthCookie": ticket[:-2] + "xx"},
        verify=emulator.ca_path,
        timeout=10,
    )
    assert (bad_ticket.status_code, bad_ticket.reason) == (401, "Authentication failed!")


def test_proxmoxer_ticket_auth_reads_and_writes(emulator):
    api = emulator.api("ticket")
    assert api.version.get()["version"].startswith("9.")
    assert api.nodes(emulator.node).qemu(9000).config.put(description="hello") is None
    assert api.nodes(emulator.node).qemu(9000).config.get()["description"] == "hello"


def test_unknown_path_is_501_after_auth(emulator):
    with pytest.raises(ResourceException) as err:
        emulator.api().nodes(emulator.node).foo.get()
    assert err.value.status_code == 501
    assert err.value.content == f"Method 'GET /nodes/{emulator.node}/foo' not implemented"
    assert emulator.http("GET", "/nodes/pve/foo", headers={}).status_code == 401


def test_body_on_get_is_501(emulator):
    answer = emulator.http(
        "GET",
        "/version",
        data="a=1",
        headers={**emulator.token_header(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (answer.status_code, answer.reason) == (501, "Unexpected content for method 'GET'")
