"""The backend SDK: key registry and code ledger (SQLite), commands and event consumption
over MQTT (paho-mqtt). docs/sdk.md says how to use it; docs/protocol.md what it speaks."""

from host_tools.backend.sdk.backend import Backend, Consumer, Issued
from host_tools.backend.sdk.ledger import Ledger, LedgerError, mqtt_password
from host_tools.backend.sdk.mqtt import BrokerError, MqttConfig

__all__ = ["Backend", "Consumer", "Issued", "Ledger", "LedgerError", "mqtt_password",
           "BrokerError", "MqttConfig"]
