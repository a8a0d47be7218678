"""The admin API of incidents and scheduled maintenance: `/v1/status-pages/{page}/incidents`
and `.../maintenances`, thin adapters over `Incidents` and `Maintenances`."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api import (
    ApiError,
    Endpoint,
    ErrorBody,
    Parameter,
    capability_of,
    json_response,
    name_param,
    principal_of,
    read_json,
)
from stellwerk.auth import Scope
from stellwerk.statuspages.incidents import IncidentInput, Incidents, IncidentUpdateInput
from stellwerk.statuspages.maintenance import (
    MaintenanceChange,
    MaintenanceInput,
    Maintenances,
    MaintenanceUpdateInput,
)
from stellwerk.statuspages.model import Incident
from stellwerk.statuspages.opened import NAME, StatusPagesOpened
from stellwerk.statuspages.routes import page_name

TAG = "status-pages"


class IncidentList(msgspec.Struct):
    incidents: list[Incident]


class MaintenanceList(msgspec.Struct):
    maintenances: list[Incident]


def incidents_of(request: Request) -> Incidents:
    return capability_of(request, NAME, StatusPagesOpened).incidents


def maintenances_of(request: Request) -> Maintenances:
    return capability_of(request, NAME, StatusPagesOpened).maintenances


def incident_id(request: Request) -> str:
    """The path's incident id; a malformed one names nothing that exists (404)."""
    value: str = request.path_params["incident"]
    return value


def flag(request: Request, name: str) -> bool:
    """A boolean query parameter (`true`/`false`, absent: false), or 400 naming it."""
    text = request.query_params.get(name, "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise ApiError(400, "InvalidRequest", f"{name} must be true or false", field=name)
    return text in ("true", "1")


def limit(request: Request, default: int = 100, most: int = 1000) -> int:
    """The `limit` query parameter, 1..`most`, or 400 naming it."""
    text = request.query_params.get("limit", str(default))
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise ApiError(400, "InvalidRequest", f"limit must be an integer 1..{most}", field="limit")
    return int(text)


async def create_incident(request: Request) -> Response:
    page = page_name(request)
    body = await read_json(request, IncidentInput)
    made = await incidents_of(request).create(principal_of(request.scope), page, body)
    return json_response(made, 201)


async def list_incidents(request: Request) -> Response:
    page = page_name(request)
    found = await incidents_of(request).list(
        principal_of(request.scope),
        page,
        maintenance=False,
        open_only=flag(request, "unresolved"),
        limit=limit(request),
    )
    return json_response(IncidentList(incidents=found))


async def get_incident(request: Request) -> Response:
    page = page_name(request)
    found = await incidents_of(request).get(principal_of(request.scope), page, incident_id(request))
    return json_response(found)


async def update_incident(request: Request) -> Response:
    page = page_name(request)
    body = await read_json(request, IncidentUpdateInput)
    made = await incidents_of(request).update(
        principal_of(request.scope), page, incident_id(request), body
    )
    return json_response(made, 201)


async def delete_incident(request: Request) -> Response:
    page = page_name(request)
    await incidents_of(request).delete(principal_of(request.scope), page, incident_id(request))
    return Response(status_code=204)


async def create_maintenance(request: Request) -> Response:
    page = page_name(request)
    body = await read_json(request, MaintenanceInput)
    made = await maintenances_of(request).create(principal_of(request.scope), page, body)
    return json_response(made, 201)


async def list_maintenances(request: Request) -> Response:
    page = page_name(request)
    found = await incidents_of(request).list(
        principal_of(request.scope),
        page,
        maintenance=True,
        open_only=flag(request, "open"),
        limit=limit(request),
    )
    return json_response(MaintenanceList(maintenances=found))


async def get_maintenance(request: Request) -> Response:
    page = page_name(request)
    found = await maintenances_of(request).get(
        principal_of(request.scope), page, request.path_params["maintenance"]
    )
    return json_response(found)


async def update_maintenance(request: Request) -> Response:
    page = page_name(request)
    body = await read_json(request, MaintenanceUpdateInput)
    made = await maintenances_of(request).update(
        principal_of(request.scope), page, request.path_params["maintenance"], body
    )
    return json_response(made, 201)


async def change_maintenance(request: Request) -> Response:
    page = page_name(request)
    body = await read_json(request, MaintenanceChange)
    made = await maintenances_of(request).change(
        principal_of(request.scope), page, request.path_params["maintenance"], body
    )
    return json_response(made)


async def delete_maintenance(request: Request) -> Response:
    page = page_name(request)
    found = await maintenances_of(request).get(
        principal_of(request.scope), page, request.path_params["maintenance"]
    )
    await incidents_of(request).delete(principal_of(request.scope), page, found.id)
    return Response(status_code=204)


_PAGE: dict[str, str | Parameter] = {"page": name_param("the status page's name")}
_INCIDENT = {**_PAGE, "incident": "the incident's id, as created"}
_MAINTENANCE = {**_PAGE, "maintenance": "the maintenance's id, as created"}
_READ: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}
_WRITE: dict[int, type | None] = {**_READ, 409: ErrorBody, 415: ErrorBody, 422: ErrorBody}
_INCIDENTS = "/v1/status-pages/{page}/incidents"
_ONE_INCIDENT = "/v1/status-pages/{page}/incidents/{incident}"
_MAINTENANCES = "/v1/status-pages/{page}/maintenances"
_ONE_MAINTENANCE = "/v1/status-pages/{page}/maintenances/{maintenance}"

INCIDENT_ENDPOINTS = [
    Endpoint(
        "post",
        _INCIDENTS,
        create_incident,
        "Open an incident, setting the status of the components it affects",
        TAG,
        Scope.ADMIN,
        request_body=IncidentInput,
        responses={201: Incident, **_WRITE},
        path_params=_PAGE,
    ),
    Endpoint(
        "get",
        _INCIDENTS,
        list_incidents,
        "List a page's incidents, newest first (?unresolved=true: the open ones)",
        TAG,
        Scope.READ,
        responses={200: IncidentList, **_READ},
        path_params=_PAGE,
    ),
    Endpoint(
        "get",
        _ONE_INCIDENT,
        get_incident,
        "Describe an incident with its updates",
        TAG,
        Scope.READ,
        responses={200: Incident, **_READ},
        path_params=_INCIDENT,
    ),
    Endpoint(
        "delete",
        _ONE_INCIDENT,
        delete_incident,
        "Delete an incident (its components keep their status)",
        TAG,
        Scope.ADMIN,
        responses={204: None, **_READ},
        path_params=_INCIDENT,
    ),
    Endpoint(
        "post",
        f"{_ONE_INCIDENT}/updates",
        update_incident,
        "Post an update to an incident: its status, impact, body and affected components",
        TAG,
        Scope.ADMIN,
        request_body=IncidentUpdateInput,
        responses={201: Incident, **_WRITE},
        path_params=_INCIDENT,
    ),
    Endpoint(
        "post",
        _MAINTENANCES,
        create_maintenance,
        "Schedule maintenance: it begins and completes on its own",
        TAG,
        Scope.ADMIN,
        request_body=MaintenanceInput,
        responses={201: Incident, **_WRITE},
        path_params=_PAGE,
    ),
    Endpoint(
        "get",
        _MAINTENANCES,
        list_maintenances,
        "List a page's maintenance, newest first (?open=true: not completed)",
        TAG,
        Scope.READ,
        responses={200: MaintenanceList, **_READ},
        path_params=_PAGE,
    ),
    Endpoint(
        "get",
        _ONE_MAINTENANCE,
        get_maintenance,
        "Describe a maintenance with its updates",
        TAG,
        Scope.READ,
        responses={200: Incident, **_READ},
        path_params=_MAINTENANCE,
    ),
    Endpoint(
        "patch",
        _ONE_MAINTENANCE,
        change_maintenance,
        "Reschedule a maintenance, or change its name, components or text (not once completed)",
        TAG,
        Scope.ADMIN,
        request_body=MaintenanceChange,
        responses={200: Incident, **_WRITE},
        path_params=_MAINTENANCE,
    ),
    Endpoint(
        "delete",
        _ONE_MAINTENANCE,
        delete_maintenance,
        "Delete a maintenance (its components keep their status)",
        TAG,
        Scope.ADMIN,
        responses={204: None, **_READ},
        path_params=_MAINTENANCE,
    ),
    Endpoint(
        "post",
        f"{_ONE_MAINTENANCE}/updates",
        update_maintenance,
        "Post an update to a maintenance (in_progress begins it, completed ends it)",
        TAG,
        Scope.ADMIN,
        request_body=MaintenanceUpdateInput,
        responses={201: Incident, **_WRITE},
        path_params=_MAINTENANCE,
    ),
]
