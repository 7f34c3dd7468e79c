"""The embedded MQTT broker (amqtt, pinned in pyproject) for `parcelbox demo` and
`parcelbox sim` when no broker is given, and a Consumer for brokers without shared
subscriptions. A real deployment uses mosquitto with docs/protocol.md section 9's users
and ACL; this one is open to this machine only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """amqtt (pinned in pyproject) in a thread of this process: plain TCP on a free port
    of 127.0.0.1, anonymous (a simulator's broker, open to this machine only). It can be
    stopped and started again on the same port (`broker restart` in a scenario)."""

    shared_subscriptions = False   # amqtt has no $share/
    ca_path = None

    def __init__(self, port: int | None = None):
        self.host, self.port = "127.0.0.1", port or _free_port()
        self._auto = port is None  # until the first start: another free port may be taken
        self._run = None

    def add_user(self, name, password=None, *, backend=False):
        return password   # anonymous

    def sdk_config(self, username, password=None):
        from host_tools.backend.sdk.mqtt import MqttConfig
        return MqttConfig(self.host, self.port, username, password, None)

    def start(self) -> "EmbeddedBroker":
        end = time.monotonic() + 10
        while True:   # after a stop the port may take a moment to be free again
            try:
                return self._start()
            except RuntimeError:
                if time.monotonic() > end:
                    raise
                if self._auto:
                    # a port picked for the first start may have become some connection's
                    # local port before the bind: take another (a restart keeps its port)
                    self.port = _free_port()
                time.sleep(0.2)

    def _start(self) -> "EmbeddedBroker":
        if self._run is not None:
            return self
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        ready, box = threading.Event(), {}
        config = {"listeners": {"default": {"type": "tcp", "bind": "%s:%d" % (self.host, self.port)}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                              {"allow_anonymous": True}}}

        def run():
            asyncio.set_event_loop(loop)

            async def start():
                try:
                    b = Broker(config, loop=loop)
                    await b.start()
                    box["broker"] = b
                except Exception as e:  # noqa: BLE001 - reported below
                    box["error"] = e
                finally:
                    ready.set()
            loop.run_until_complete(start())
            if "broker" in box:
                loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        t = threading.Thread(target=run, name="embedded-broker", daemon=True)
        t.start()
        if not ready.wait(10) or "broker" not in box:
            raise RuntimeError("the embedded broker did not start: %r" % (box.get("error"),))
        self._run = (box["broker"], loop, t)
        self._auto = False  # started: a `broker restart` comes back on this port
        return self

    def stop(self) -> None:
        if self._run is None:
            return
        broker, loop, t = self._run
        self._run = None

        async def shutdown():
            try:
                await broker.shutdown()
            finally:
                rest = [x for x in asyncio.all_tasks() if x is not asyncio.current_task()]
                for x in rest:
                    x.cancel()
                await asyncio.gather(*rest, return_exceptions=True)
        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(2)
        except Exception:  # noqa: BLE001 - stopped either way
            pass
        finally:
            loop.call_soon_threadsafe(loop.stop)
            t.join(10)

    def restart(self) -> "EmbeddedBroker":
        self.stop()
        return self.start()

    close = stop


def plain_consumer(box_id: str):
    """The SDK's Consumer class with plain subscriptions to one box's topics, for a broker
    without shared subscriptions (`$share/...`: amqtt)."""
    from host_tools.backend import protocol as p
    from host_tools.backend.sdk import Consumer

    class PlainConsumer(Consumer):
        def _on_connect(self, c, userdata, flags, rc, props=None):
            if rc == 0:
                c.subscribe([(p.PREFIX + box_id + "/" + k, 1) for k in ("evt", "state", "status")])
    return PlainConsumer
