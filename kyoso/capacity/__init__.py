"""Capacity and KPIs derived from telemetry: ISO 22400-2 time elements, ISA-95 capacity."""
