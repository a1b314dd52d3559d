"""Hetzner Cloud's DNS API (zones and their RRSets): the one client that the entry failover
watcher (entry_failover.py) and the certbot DNS-01 hook (acme_dns_hook.py) share.

Delivered by unde-infra beside them as /usr/local/lib/unde/hcloud_dns.py, where a script run
from that directory imports it (its directory is the first entry of sys.path). Python 3.11
standard library only.

The token never reaches a log line or an error message (`Redactor`), never follows a redirect
(one would send it wherever it points), and temporary errors (429, 409, 423, 5xx, timeouts) are
retried with growing pauses while mistakes (401, 404, 422) are not.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:  # the package in the tests; on a server the files lie beside each other (sys.path[0])
    from .script_support import Redactor
except ImportError:
    from script_support import Redactor  # type: ignore[import-not-found,no-redef]

__all__ = ["ApiError", "ApiSettings", "Redactor", "ZoneApi"]

# Hetzner answers these with a temporary error: retry them (rate_limit_exceeded, conflict,
# locked, and the 5xx family); every other 4xx is a mistake a retry does not mend.
RETRY_STATUSES = frozenset({409, 423, 429, 500, 502, 503, 504})


class ApiError(Exception):
    pass


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The API never redirects; following one would send the token to wherever it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_API_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass(frozen=True)
class ApiSettings:
    endpoint: str  # https://api.hetzner.cloud/v1
    timeout_seconds: float  # one request
    attempts: int  # per call, temporary errors included
    action_timeout_seconds: float  # how long to follow an action that is still running


class ZoneApi:
    """The RRSets of one zone."""

    def __init__(self, settings: ApiSettings, zone: str, token: str, log: Redactor, user_agent: str,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings, self.zone, self.token, self.log, self.sleep = settings, zone, token, log, sleep
        self.user_agent = user_agent
        log.add(token)

    def rrset_path(self, name: str, record_type: str) -> str:
        quote = urllib.parse.quote
        return f"/zones/{quote(self.zone, safe='')}/rrsets/{quote(name, safe='@')}/{record_type}"

    def _once(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any], str | None]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.settings.endpoint.rstrip("/") + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json", "User-Agent": self.user_agent,
            **({"Content-Type": "application/json"} if data is not None else {}),
        })
        try:
            with _API_OPENER.open(request, timeout=self.settings.timeout_seconds) as response:
                return response.status, json.loads(response.read() or b"{}"), None
        except urllib.error.HTTPError as error:
            raw = error.read()[:2048]
            try:
                content = json.loads(raw or b"{}")
            except ValueError:
                content = {"error": {"code": "unparsable", "message": raw.decode(errors="replace")}}
            return error.code, content if isinstance(content, dict) else {}, error.headers.get("Retry-After")

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                missing_ok: bool = False) -> dict[str, Any] | None:
        """One API call, retried on temporary errors with a growing pause; raises ApiError. With
        `missing_ok` a 404 is an answer (None), not an error."""
        problem = ""
        for attempt in range(1, self.settings.attempts + 1):
            retry_after: str | None = None
            try:
                status, content, retry_after = self._once(method, path, body)
            except (OSError, ValueError) as exc:  # refused, reset, timed out, unreadable body
                status, content, problem = 0, {}, f"{type(exc).__name__}: {exc}"
            if 200 <= status < 300:
                return content
            if status == 404 and missing_ok:
                return None
            if status:
                found = content.get("error")
                error: dict[str, Any] = found if isinstance(found, dict) else {}
                problem = f"HTTP {status} {error.get('code', '')}: {str(error.get('message', ''))[:200]}".strip()
            if status and status not in RETRY_STATUSES:
                break
            if attempt < self.settings.attempts:
                pause = min(2.0 ** (attempt - 1), 8.0)
                if retry_after and retry_after.isdigit():
                    pause = min(float(retry_after), 30.0)
                self.log(f"API {method} {path}: {problem}; retrying in {pause:g} s (attempt {attempt})")
                self.sleep(pause)
        raise ApiError(self.log.clean(f"API {method} {path} failed: {problem}"))

    def read_records(self, name: str, record_type: str) -> list[str]:
        content = self.request("GET", self.rrset_path(name, record_type)) or {}
        return [str(r.get("value")) for r in content.get("rrset", {}).get("records", [])]

    def set_records(self, name: str, record_type: str, value: str, comment: str) -> None:
        """The RRSet holds `value` alone (Hetzner's set_records)."""
        self._follow("set_records", self.request("POST", f"{self.rrset_path(name, record_type)}/actions/set_records",
                                                 {"records": [{"value": value, "comment": comment}]}))

    def add_records(self, name: str, record_type: str, values: list[str], ttl: int, comment: str) -> None:
        """Adds `values` to the RRSet, which Hetzner creates (with `ttl`) if it does not exist."""
        body = {"ttl": ttl, "records": [{"value": value, "comment": comment} for value in values]}
        self._follow("add_records", self.request("POST", f"{self.rrset_path(name, record_type)}/actions/add_records",
                                                 body))

    def remove_records(self, name: str, record_type: str, values: list[str]) -> bool:
        """Removes `values` from the RRSet (Hetzner deletes an RRSet left empty); False when the
        RRSet is not there (nothing to remove)."""
        content = self.request("POST", f"{self.rrset_path(name, record_type)}/actions/remove_records",
                               {"records": [{"value": value} for value in values]}, missing_ok=True)
        if content is None:
            return False
        self._follow("remove_records", content)
        return True

    def _follow(self, what: str, content: dict[str, Any] | None) -> None:
        """Wait for the action an RRSet change started, up to the action timeout."""
        action = (content or {}).get("action") or {}
        deadline = time.monotonic() + self.settings.action_timeout_seconds
        while action.get("status") == "running" and time.monotonic() < deadline:
            self.sleep(1.0)
            action = (self.request("GET", f"/actions/{int(action['id'])}") or {}).get("action") or {}
        if action.get("status") == "error":
            error = action.get("error") or {}
            raise ApiError(self.log.clean(f"{what} action failed: {error.get('code')}: {error.get('message')}"))
        if action.get("status") == "running":
            self.log(f"{what} accepted; action {action.get('id')} still running after "
                     f"{self.settings.action_timeout_seconds:g} s")
