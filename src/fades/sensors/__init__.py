"""IoT sensors: an MQTT simulator and the node's ingest of MQTT readings."""
