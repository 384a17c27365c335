"""Grafana dashboards as code: a plant-manager dashboard and a regional capacity board.

Built with Grafana's own Foundation SDK (``grafana-foundation-sdk``, the Grafana 11.6
schema) in :mod:`~kyoso.dashboards.plant` and :mod:`~kyoso.dashboards.regional`; every query
is raw InfluxQL on the layout of docs/storage.md. ``kyoso dashboards generate`` writes the
JSON committed under ``dashboards/`` (``--check`` compares), and ``kyoso dashboards push``
uploads them to a Grafana. Needs the ``dashboards`` extra: ``pip install 'kyoso[dashboards]'``.
"""
