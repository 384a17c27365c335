"""Uploading the dashboards to a running Grafana through its HTTP API (``grafana-client``).

Each dashboard goes into one folder (created if missing, found again by its title) with
``overwrite``: a push replaces the dashboard of the same uid, so pushing again after
``kyoso dashboards generate`` updates it in place. The data sources the dashboards use
must exist in that Grafana (provisioned by the compose stack, or created by hand with the
same uids: the factory ids and ``kyoso-capacity``).
"""

from collections.abc import Iterable, Mapping
from typing import Any

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaException

__all__ = ["MESSAGE", "PushError", "push_dashboards", "upload_payload"]

MESSAGE = "kyoso dashboards push"
"""The version message Grafana keeps with each upload."""


class PushError(Exception):
    """Grafana could not be reached or refused an upload."""


def upload_payload(document: Mapping[str, Any], folder_uid: str) -> dict[str, Any]:
    """The body of ``POST /api/dashboards/db`` for one dashboard: without its numeric id
    (Grafana's own, per instance), into ``folder_uid``, replacing the same uid."""
    dashboard = {key: value for key, value in document.items() if key != "id"}
    return {"dashboard": dashboard, "folderUid": folder_uid, "overwrite": True, "message": MESSAGE}


def push_dashboards(
    api: GrafanaApi, documents: Iterable[Mapping[str, Any]], folder: str
) -> list[str]:
    """Upload ``documents`` into the folder titled ``folder``; return each dashboard's URL
    path. :class:`PushError` says what failed (unreachable, bad token, refused)."""
    # grafana-client's methods carry no annotations: hence the ignores.
    try:
        folders = api.folder.get_all_folders()  # type: ignore[no-untyped-call]
        found = [f["uid"] for f in folders if f.get("title") == folder]
        create = api.folder.create_folder  # untyped too
        folder_uid = found[0] if found else create(folder)["uid"]  # type: ignore[no-untyped-call]
        urls = []
        for document in documents:
            payload = upload_payload(document, folder_uid)
            answer = api.dashboard.update_dashboard(payload)  # type: ignore[no-untyped-call]
            urls.append(str(answer["url"]))
        return urls
    except GrafanaException as exc:
        raise PushError(f"Grafana answered {exc.status_code}: {exc.message}") from exc
    except OSError as exc:  # connection refused, DNS, TLS: niquests' errors are OSErrors
        raise PushError(f"Grafana unreachable: {exc}") from exc
