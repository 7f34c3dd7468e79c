# A broker's URL, parsed in one place: mqtt://[user[:pass]@]host[:port] or mqtts://...
# The SDK, provisioning and the CLI read it here; a bad one is a BrokerUrlError a user can act on.
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
_LOOKS = "mqtts://host:8883 or mqtt://host:1883"


class BrokerUrlError(ValueError):
    """A broker address that cannot be used; the message says why, never its password."""


@dataclass(frozen=True)
class BrokerUrl:
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def public(self) -> str:
        """The address without user or password, as a box's record may carry it."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % (self.scheme, host, self.port)


def parse(url: str) -> BrokerUrl:
    """The scheme says whether TLS is on, so it is required; the port defaults to the
    scheme's (1883, 8883)."""
    if "://" not in url:
        raise BrokerUrlError("the broker needs its scheme: %s" % _LOOKS)
    try:
        u = urlsplit(url)
        hostname = u.hostname
    except ValueError:   # an unbalanced [ of an IPv6 address
        raise BrokerUrlError("the broker must look like %s" % _LOOKS) from None
    if u.scheme not in SCHEMES:
        raise BrokerUrlError("the broker's scheme must be mqtt:// or mqtts://, not %s://"
                             % u.scheme[:20])
    if not hostname:
        raise BrokerUrlError("the broker has no host: %s" % _LOOKS)
    try:
        port = u.port or SCHEMES[u.scheme]
    except ValueError:
        raise BrokerUrlError("the broker port must be a number 1..65535") from None
    return BrokerUrl(u.scheme, u.hostname, port, unquote(u.username) if u.username else None,
                     unquote(u.password) if u.password else None)
