"""Grafana dashboards as code: a plant-manager dashboard and a regional capacity board.

Built with Grafana's own Foundation SDK (``grafana-foundation-sdk``, the Grafana 11.6
schema) in :mod:`~kyoso.dashboards.plant` and :mod:`~kyoso.dashboards.regional`; every query
is raw InfluxQL on the layout of docs/storage.md. Each is built once per language from the
same code, its words from the catalog (:mod:`~kyoso.dashboards.words`). ``kyoso dashboards
generate`` writes the JSON committed under ``dashboards/en/`` and ``dashboards/ja/``
(``--check`` compares), and ``kyoso dashboards push`` uploads them to a Grafana.
Needs the ``dashboards`` extra: ``pip install 'kyoso[dashboards]'``.
"""
