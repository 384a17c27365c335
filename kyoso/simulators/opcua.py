"""OPC UA servers for a factory's simulated machine tools: an umati-like address space each.

Each OPC UA machine has its own server on its own port, as a machine tool's control does
(asyncua's server). Its address space follows the umati machine-tool model (OPC 40501-1)
where the model has a place, in the MachineTool namespace, under
``0:Objects/<v>:Machines/<v>:<machine id>`` (``v``: this simulator's namespace):

- ``Monitoring/MachineTool/OperationMode`` (MachineOperationModeEnumeration),
- ``Monitoring/Channel1/ChannelState`` (ChannelStateEnumeration),
- ``Production/ActiveProgram/State/CurrentState`` (the ProductionProgramStateMachine's
  state, a LocalizedText),
- ``Monitoring/Stacklight/<Red|Yellow|Green>/SignalOn`` (booleans);

and, where the model has none, vendor nodes by string node id in ``v``: ``<machine>.
PartsGood``, ``<machine>.PartsBad`` (cumulative counts), ``<machine>.AlarmCode`` (the
active alarm's code, 0 with none: what a Modbus machine's alarm register holds) and
``<machine>.SpindleSpeed`` (rpm). An updater writes the behaviour model's state into the
nodes every ``update_s`` of wall time (or, with ``update_s=None``, when a test calls
:meth:`OpcuaMachineServer.update` after moving its clock), so what it shows is the truth
(:data:`STATE_VIEW`; docs/simulators.md has the table). A breakdown is also an alarm: an
``AlarmConditionType`` event from ``Notification/Messages`` carrying umati AlertType's
``ErrorCode`` (the alarm code), active while the machine is down, kept for
``ConditionRefresh``.

Basic256Sha256 (Sign, SignAndEncrypt) is offered beside None when the server is given a
certificate (:func:`make_certificate` makes self-signed ones); a server given ``trusted``
client certificates refuses any other (BadCertificateUntrusted), and one given ``users``
refuses anonymous and wrong logins (BadUserAccessDenied). ``subscriptions=False`` makes a
server that refuses subscriptions (BadTooManySubscriptions), as small controls do.
"""

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen, uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_session import InternalSession
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from kyoso.contract import MachineState

from .behaviour import MachineModel
from .config import FactoryConfig, OpcuaSourceConfig
from .endpoints import ServerEndpoint
from .mtconnect import STATE_VIEW as AGENT_VIEW

log = logging.getLogger(__name__)

MACHINE_TOOL_NS: Final = "http://opcfoundation.org/UA/MachineTool/"
VENDOR_NS: Final = "urn:kyoso:simulator"

STATE_VIEW: Final[Mapping[MachineState, tuple[int, int, str, str]]] = {
    # OperationMode, ChannelState, program state, the lit lamp; the spindle turns as the
    # MTConnect agent's does, and the backfilled history reads both alike.
    MachineState.RUNNING: (1, 0, "Running", "Green"),
    MachineState.IDLE: (1, 2, "Ended", "Yellow"),
    MachineState.SETUP: (2, 2, "Ended", "Yellow"),
    MachineState.DOWN: (1, 1, "Interrupted", "Red"),
    MachineState.PLANNED_STOP: (1, 2, "Ended", ""),
}
"""What the server shows in each true state (the table in docs/simulators.md)."""

_LAMPS: Final = ("Red", "Yellow", "Green")


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """A certificate (DER) and its private key (PEM) on disk."""

    certificate: Path
    private_key: Path


def make_certificate(directory: Path, name: str, uri: str, *, client: bool) -> CertificateFiles:
    """A self-signed application certificate for ``uri`` on localhost, valid one year."""
    key = cert_gen.generate_private_key()
    use = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(uri),
        x509.DNSName("localhost"),
    ]
    cert = cert_gen.generate_self_signed_app_certificate(key, name, {}, names, [use])
    files = CertificateFiles(directory / f"{name}.der", directory / f"{name}.pem")
    files.certificate.write_bytes(cert.public_bytes(Encoding.DER))
    files.private_key.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return files


class _Users(UserManager):
    """Named users with passwords; anyone else is refused."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None,
        certificate: Any = None,
    ) -> User | None:  # fmt: skip
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User)
        return None


class OpcuaMachineServer:
    """The OPC UA server of one machine; ``now`` returns the simulation time."""

    def __init__(
        self,
        machine: str,
        source: OpcuaSourceConfig,
        model: MachineModel,
        now: Callable[[], float],
        *,
        host: str = "127.0.0.1",
        certificate: CertificateFiles | None = None,
        trusted: list[Path] | None = None,
        users: Mapping[str, str] | None = None,
        subscriptions: bool = True,
        update_s: float | None = 0.1,
    ) -> None:
        self.machine = machine
        self.source = source
        self.model = model
        self.host = host
        self.port: int | None = None
        self.certificate = certificate
        self.trusted = trusted
        self.users = users
        self.subscriptions = subscriptions
        self.update_s = update_s
        self._now = now
        self._server: Server | None = None
        self._nodes: dict[str, Node] = {}
        self._shown: dict[str, object] = {}
        self._updater: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> ServerEndpoint:
        """Where the server answers; known once it is started."""
        if self.port is None:
            raise RuntimeError(f"the OPC UA server of {self.machine} is not started")
        return ServerEndpoint(self.host, self.port, self.machine)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the configured port (the same one again after :meth:`stop`)."""
        server = Server(user_manager=_Users(self.users) if self.users is not None else None)
        server.iserver.bind_condition_methods = True  # ConditionRefresh
        await server.init()
        port = self.port or self.source.port
        server.set_endpoint(f"opc.tcp://{self.host}:{port}/kyoso/")
        server.set_server_name(f"Kyoso simulator {self.machine}")
        await server.set_application_uri(f"urn:kyoso:simulator:{self.machine}")
        policies = [ua.SecurityPolicyType.NoSecurity]
        if self.certificate is not None:
            await server.load_certificate(str(self.certificate.certificate))
            await server.load_private_key(str(self.certificate.private_key))
            policies += [
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
        server.set_security_policy(policies)
        # Logins the server offers: named users if it has them, else anonymous only.
        login = ua.UserNameIdentityToken if self.users is not None else ua.AnonymousIdentityToken
        server.set_identity_tokens([login])
        if self.trusted is not None:
            server.set_certificate_validator(await _trust(self.trusted))
        if not self.subscriptions:
            _refuse_subscriptions(server)
        await self._build(server)
        await server.start()
        self._server = server
        self.port = server.bserver.port if server.bserver is not None else port
        if self.update_s is not None:
            self._updater = asyncio.create_task(self._update_forever(self.update_s))
        log.info("%s: OPC UA server on %s", self.machine, self.endpoint.url)

    async def stop(self) -> None:
        """Close the server and every session; the port is kept for a restart."""
        updater, self._updater = self._updater, None
        if updater is not None:
            updater.cancel()
            await asyncio.gather(updater, return_exceptions=True)
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
        self._shown.clear()

    async def restart(self) -> None:
        """Stop and start again on the same port: every session is gone."""
        await self.stop()
        await self.start()

    # -- the address space --------------------------------------------------------------

    async def _build(self, server: Server) -> None:
        vendor = await server.register_namespace(VENDOR_NS)
        mt = await server.register_namespace(MACHINE_TOOL_NS)
        machines = await server.nodes.objects.add_folder(vendor, "Machines")
        machine = await machines.add_object(vendor, self.machine)
        monitoring = await machine.add_object(mt, "Monitoring")
        tool = await monitoring.add_object(mt, "MachineTool")
        channel = await monitoring.add_object(mt, "Channel1")
        program = await (await machine.add_object(mt, "Production")).add_object(mt, "ActiveProgram")
        state = await program.add_object(mt, "State")
        lights = await monitoring.add_object(mt, "Stacklight")
        nodes = {
            "mode": await tool.add_variable(mt, "OperationMode", 1, ua.VariantType.Int32),
            "channel": await channel.add_variable(mt, "ChannelState", 2, ua.VariantType.Int32),
            "program": await state.add_variable(
                0, "CurrentState", ua.LocalizedText("Ended"), ua.VariantType.LocalizedText
            ),
        }
        for lamp in _LAMPS:
            element = await lights.add_object(mt, lamp)
            nodes[lamp] = await element.add_variable(mt, "SignalOn", False, ua.VariantType.Boolean)
        for name, kind in (
            ("PartsGood", ua.VariantType.UInt32),
            ("PartsBad", ua.VariantType.UInt32),
            ("AlarmCode", ua.VariantType.UInt16),
            ("SpindleSpeed", ua.VariantType.Double),
        ):
            node_id = ua.NodeId(ua.String(f"{self.machine}.{name}"), ua.Int16(vendor))
            nodes[name] = await machine.add_variable(node_id, name, 0, kind)
        self._nodes = nodes
        messages = await (await machine.add_object(mt, "Notification")).add_object(mt, "Messages")
        self._alarm = await server.get_event_generator(
            ObjectIds.AlarmConditionType, messages.nodeid
        )
        event = self._alarm.event
        condition = ua.NodeId(ua.String(f"{self.machine}.Alarm"), ua.Int16(vendor))
        event.add_property("NodeId", condition, ua.VariantType.NodeId)
        event.add_property("ErrorCode", "", ua.VariantType.String)  # umati AlertType's
        event.ConditionName = "Alarm"
        event.Severity = 800
        await self.update()

    async def _update_forever(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            await self.update()

    async def update(self) -> list[ua.NodeId]:
        """Write what the machine shows now, only the values that changed (as a control
        does); the nodes written."""
        snap = self.model.snapshot(self._now())
        mode, channel, program, lamp = STATE_VIEW[snap.state]
        down = snap.state is MachineState.DOWN
        shown: dict[str, object] = {
            "mode": mode,
            "channel": channel,
            "program": program,
            "PartsGood": snap.good_total,
            "PartsBad": snap.reject_total,
            "AlarmCode": snap.alarm if down else 0,
            "SpindleSpeed": AGENT_VIEW[snap.state][2],
        }
        shown.update((name, name == lamp) for name in _LAMPS)
        written_nodes: list[ua.NodeId] = []
        for key, value in shown.items():
            if self._shown.get(key) == value:
                continue
            node = self._nodes[key]
            kind = await node.read_data_type_as_variant_type()
            written = ua.LocalizedText(str(value)) if key == "program" else value
            await node.write_value(ua.DataValue(ua.Variant(written, kind)))
            self._shown[key] = value
            written_nodes.append(node.nodeid)
        alarm = snap.alarm if down else 0
        if self.alarm != alarm:
            await self._raise_alarm(alarm, snap.at)
            written_nodes.append(self._alarm.event.NodeId)
        return written_nodes

    @property
    def alarm(self) -> int:
        """The code of the alarm the server shows active, 0 with none."""
        code = self._shown.get("alarm event", 0)
        assert isinstance(code, int)
        return code

    async def _raise_alarm(self, code: int, at: float) -> None:
        """An AlarmConditionType event: the alarm ``code`` is active (0: none is)."""
        event = self._alarm.event
        event.Retain = bool(code)
        setattr(event, "ActiveState/Id", bool(code))
        event.ActiveState = ua.LocalizedText("Active" if code else "Inactive")
        event.ErrorCode = str(code) if code else ""
        message = f"alarm {code}" if code else "alarm cleared"
        await self._alarm.trigger(datetime.fromtimestamp(at, UTC), message)
        self._shown["alarm event"] = code


async def _trust(paths: list[Path]) -> Callable[..., Any]:
    """A validator accepting exactly the certificates in ``paths``."""
    trusted = {(await uacrypto.load_certificate(str(p))).fingerprint(_SHA256) for p in paths}

    async def validate(certificate: x509.Certificate, app: ua.ApplicationDescription) -> None:
        if certificate.fingerprint(_SHA256) not in trusted:
            raise ua.uaerrors.BadCertificateUntrusted

    return validate


def _refuse_subscriptions(server: Server) -> None:
    """Make every session of ``server`` refuse CreateSubscription."""

    async def refused(*_: object, **__: object) -> ua.CreateSubscriptionResult:
        raise ServiceError(StatusCodes.BadTooManySubscriptions)

    original = server.iserver.create_session

    def create_session(*args: Any, **kwargs: Any) -> InternalSession:
        session = original(*args, **kwargs)
        session.create_subscription = refused  # type: ignore[method-assign]
        return session

    server.iserver.create_session = create_session  # type: ignore[method-assign]


def opcua_servers(
    factory: FactoryConfig,
    models: Mapping[str, MachineModel],
    now: Callable[[], float],
    *,
    host: str = "127.0.0.1",
) -> dict[str, OpcuaMachineServer]:
    """The servers of a factory's OPC UA machines, not started."""
    return {
        m.id: OpcuaMachineServer(m.id, m.source, models[m.id], now, host=host)
        for m in factory.machines
        if isinstance(m.source, OpcuaSourceConfig)
    }


_SHA256: Final = hashes.SHA256()
