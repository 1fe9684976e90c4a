"""Devices of the Virtual Factory: sensors and actuators a node declares, commands to the
actuators (checked, sent over MQTT, audited), and the simulated shop floor of ``fades up``."""
