# What tests and benchmarks share: the private MQTT broker and the one wait helper.
