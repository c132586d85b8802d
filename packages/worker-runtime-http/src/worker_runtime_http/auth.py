"""Who may talk to the Runtime: the Host allow list, the refusal of browsers, and the bearer token.

The checks run in the wire contract's order (docs/wire.md): Host (``403 forbidden_host``), ``Origin``
(``403 forbidden_origin``), token (``401 unauthorized``). The token is compared with `hmac.compare_digest` and
never logged or echoed.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable

from worker_runtime_core import ForbiddenHostError, ForbiddenOriginError, UnauthorizedError

__all__ = ["LOOPBACK_NAMES", "Guard", "is_loopback_host"]

#: Host names a loopback-bound server answers to, beside the bound address itself.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``127.0.0.0/8``, ``::1``), with or without brackets."""
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """``::1`` -> ``[::1]``: the form a Host header carries an IPv6 address in."""
    name = host.strip().lower()
    if ":" in name and not name.startswith("["):
        return f"[{name}]"
    return name


class Guard:
    """The Host, Origin and token checks of every request.

    Args:
        token: the bearer token every route but ``/healthz`` and ``/readyz`` requires; None requires none.
        allowed_hosts: Host header values to accept: ``name`` (any port) or ``name:port`` (that port only);
            ``*`` accepts any Host (the header is not checked).
        bind: the address the server is bound to; a loopback bind accepts that address, ``localhost``,
            ``127.0.0.1`` and ``[::1]`` with the bound port.

    When neither `allowed_hosts` nor a loopback `bind` is given, only the loopback names are accepted
    (`LOOPBACK_NAMES`, any port).
    """

    __slots__ = ("_any_port", "_exact", "_token", "checks_host")

    def __init__(
        self, *, token: str | None = None, allowed_hosts: Iterable[str] = (), bind: tuple[str, int] | None = None
    ) -> None:
        self._token = token.encode() if token is not None else None
        self._exact: set[bytes] = set()
        self._any_port: set[bytes] = set()
        any_host = False
        for entry in allowed_hosts:
            value = entry.strip().lower()
            if not value:
                continue
            if value == "*":
                any_host = True
                continue
            if value.startswith("["):  # [::1] or [::1]:8787
                has_port = "]:" in value
            elif value.count(":") == 1:  # name:port
                has_port = True
            else:  # a name, or a bare IPv6 address
                has_port = False
                value = _host_name(value)
            (self._exact if has_port else self._any_port).add(value.encode())
        if bind is not None and is_loopback_host(bind[0]):
            host, port = bind
            for name in {*LOOPBACK_NAMES, _host_name(host)}:
                self._exact.add(f"{name}:{port}".encode())
                if port == 80:
                    self._exact.add(name.encode())
        if not (self._exact or self._any_port):
            self._any_port.update(name.encode() for name in LOOPBACK_NAMES)
        self.checks_host = not any_host

    @property
    def requires_token(self) -> bool:
        """Whether requests need a bearer token."""
        return self._token is not None

    def check(self, host: bytes | None, origin: bytes | None, authorization: bytes | None, public: bool) -> None:
        """All three checks in the wire contract's order; a `public` route (health probes) needs no token."""
        token = self._token
        if (  # the usual request, at the cost of one call: an exact Host, no Origin, the token
            origin is None
            and host is not None
            and host in self._exact
            and (
                public
                or token is None
                or (
                    authorization is not None
                    and authorization[:7] == b"Bearer "
                    and hmac.compare_digest(authorization[7:].strip(), token)
                )
            )
        ):
            return
        self.check_host(host)
        self.check_origin(origin)
        if not public:
            self.check_token(authorization)

    def check_host(self, host: bytes | None) -> None:
        """Raise `ForbiddenHostError` unless the Host header is allowed (or Host is not checked)."""
        if not self.checks_host:
            return
        if host is not None:
            value = host.lower()
            if value in self._exact:
                return
            if self._any_port:
                name = value.rsplit(b":", 1)[0] if value.rfind(b":") > value.rfind(b"]") else value
                if name in self._any_port:
                    return
        raise ForbiddenHostError(
            "the Host header is not one this Runtime answers to",
            details={"host": host.decode("latin-1")[:200] if host is not None else None},
        )

    @staticmethod
    def check_origin(origin: bytes | None) -> None:
        """Raise `ForbiddenOriginError` when the request carries an ``Origin`` header: browsers never get in."""
        if origin is not None:
            raise ForbiddenOriginError("requests from browsers (with an Origin header) are refused")

    def check_token(self, authorization: bytes | None) -> None:
        """Raise `UnauthorizedError` unless ``Authorization: Bearer <token>`` carries the token."""
        token = self._token
        if token is None:
            return
        if authorization is not None and authorization[:7].lower() == b"bearer ":
            if hmac.compare_digest(authorization[7:].strip(), token):
                return
        raise UnauthorizedError("a valid bearer token is required (Authorization: Bearer <token>)")
