"""The regional stack: access control and configuration generated from one gateway registry.

A region lists its gateways once, in a registry file (``deploy/gateways.example.yaml``).
From it, ``kyoso regional`` generates what the services of ``docker-compose.yml`` need:
Mosquitto's password and ACL files (each gateway confined to its own factory), the InfluxDB
users and grants (one read user per factory database), Grafana's data sources (one per
factory, with that factory's read user) and, for the demo factories, gateway
configurations. Passwords come from the environment for the stack's own accounts, and are
otherwise generated once into a secrets file; none has a default. See docs/regional.md.
"""
