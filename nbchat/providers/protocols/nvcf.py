"""NVIDIA Cloud Functions (NVCF) invocation: the 202 + `NVCF-REQID` polling loop and assets.

NVIDIA's hosted endpoints (chat on integrate.api.nvidia.com, text-to-image on
ai.api.nvidia.com/v1/genai) run on NVCF. A request that is still queued answers
`202 Accepted` with an `NVCF-REQID` header; the client polls
`GET https://api.nvcf.nvidia.com/v2/nvcf/pexec/status/{reqid}` until it answers 200 (or an
error). See https://docs.nvidia.com/cloud-functions/user-guide/latest/cloud-function/api.html
(the polling is replayed in tests/test_nvidia.py). Large input images are uploaded as NVCF
assets and referenced by id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from ...core import http
from ...core.errors import NbchatError, ProtocolError, ProviderError

NVCF = "https://api.nvcf.nvidia.com/v2/nvcf"
NVCF_ASSETS = f"{NVCF}/assets"
NVCF_STATUS = f"{NVCF}/pexec/status"
POLL_INTERVAL = 1.0  # seconds between status polls
POLL_LIMIT = 600  # polls before giving up (about ten minutes)


async def open_polled(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    auth: httpx.Auth | None = None,
    html_error: Callable[[int, bytes], NbchatError] | None = None,
) -> httpx.Response:
    """POST, and while NVCF answers 202 + NVCF-REQID, poll its status URL (chat and images).

    `auth` (the NVIDIA key) goes with the POST and every poll. Returns the final response
    with its body unread (the caller closes it); raises `ProtocolError` for a 202 without
    `NVCF-REQID`, `ProviderError` after `POLL_LIMIT` polls (`POLL_INTERVAL` seconds apart).
    """
    response = await http.open_stream(
        client, "POST", url, provider="nvidia", json_body=body, headers=headers, auth=auth,
        key_env="NVIDIA_API_KEY", html_error=html_error, accept_status=lambda s: s == 202,
    )
    polls = 0
    while response.status_code == 202:
        reqid = response.headers.get("nvcf-reqid")
        await response.aclose()
        if not reqid:
            raise ProtocolError("NVIDIA answered 202 without an NVCF-REQID header to poll")
        polls += 1
        if polls > POLL_LIMIT:
            raise ProviderError("the request is still queued; try again later", provider="nvidia")
        await http.sleep(POLL_INTERVAL)
        poll_headers = {k: v for k, v in headers.items()
                        if k.lower() != "nvcf-input-asset-references"}
        response = await http.open_stream(
            client, "GET", f"{NVCF_STATUS}/{reqid}", provider="nvidia",
            headers=poll_headers, auth=auth, key_env="NVIDIA_API_KEY",
            accept_status=lambda s: s == 202,
        )
    return response
