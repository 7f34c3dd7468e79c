# A broker's URL, parsed in one place: mqtt://[user[:pass]@]host[:port] or mqtts://...
# The SDK, provisioning and the CLI read it here; a bad one is a ValueError a user can act on.
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SCHEMES = {"mqtt": 1883, "mqtts": 8883}


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
    """A scheme-less URL is mqtt://; the port defaults to the scheme's (1883, 8883)."""
    u = urlsplit(url if "://" in url else "mqtt://" + url)
    if u.scheme not in SCHEMES or not u.hostname:
        raise ValueError("the broker must look like mqtts://host:8883 or mqtt://host:1883")
    try:
        port = u.port or SCHEMES[u.scheme]
    except ValueError:
        raise ValueError("the broker port must be a number 1..65535") from None
    return BrokerUrl(u.scheme, u.hostname, port, unquote(u.username) if u.username else None,
                     unquote(u.password) if u.password else None)
