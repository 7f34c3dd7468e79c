# The backend's side: the wire protocol's host codec, digests, the SDK (registry, ledger,
# commands, event consumer) and the embedded MQTT broker.
