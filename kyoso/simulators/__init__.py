"""Demo-factory simulators: Modbus machines and MQTT current clamps with known ground truth."""
