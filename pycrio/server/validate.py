"""Request validation that runs before any work: required fields, enum values, sizes."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from pycrio.errors import InvalidArgument

MAX_ID_LENGTH = 256  # ids are 64 hex characters; clients may send a unique prefix
MAX_STRING_LENGTH = 1 << 20  # any other string (commands, env, annotations)

# RPC name -> dotted field paths that must be set (non-empty) in its request. Stop and Remove
# are absent on purpose: they are idempotent, and "nothing named" is nothing to stop.
REQUIRED: dict[str, tuple[str, ...]] = {
    "RunPodSandbox": ("config", "config.metadata", "config.metadata.name"),
    "PodSandboxStatus": ("pod_sandbox_id",),
    "CreateContainer": ("pod_sandbox_id", "config", "config.metadata", "config.metadata.name", "config.image.image"),
    "StartContainer": ("container_id",),
    "ContainerStatus": ("container_id",),
    "UpdateContainerResources": ("container_id",),
    "ReopenContainerLog": ("container_id",),
    "ExecSync": ("container_id", "cmd"),
    "Exec": ("container_id", "cmd"),
    "Attach": ("container_id",),
    "PortForward": ("pod_sandbox_id",),
    "ContainerStats": ("container_id",),
    "PodSandboxStats": ("pod_sandbox_id",),
    "CheckpointContainer": ("container_id",),
    "UpdatePodSandboxResources": ("pod_sandbox_id",),
    "ImageStatus": ("image", "image.image"),
    "PullImage": ("image", "image.image"),
    "RemoveImage": ("image", "image.image"),
}


def _is_set(msg: Message, path: str) -> bool:
    *parents, last = path.split(".")
    for name in parents:
        if not msg.HasField(name):
            return False
        msg = getattr(msg, name)
    field = msg.DESCRIPTOR.fields_by_name[last]
    if field.message_type is not None and not is_repeated(field):
        return msg.HasField(last)
    return bool(getattr(msg, last))


def is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 7 dropped FieldDescriptor.label; older releases lack is_repeated.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return field.label == FieldDescriptor.LABEL_REPEATED


def _check_scalar(field: FieldDescriptor, value: object, where: str) -> None:
    if field.type == FieldDescriptor.TYPE_ENUM:
        if field.enum_type.values_by_number.get(value) is None:  # type: ignore[call-overload]
            names = ", ".join(v.name for v in field.enum_type.values)
            raise InvalidArgument(f"{where}: {value} is not a valid {field.enum_type.name} (one of {names})")
    elif field.type == FieldDescriptor.TYPE_STRING:
        assert isinstance(value, str)
        limit = MAX_ID_LENGTH if field.name == "id" or field.name.endswith("_id") else MAX_STRING_LENGTH
        if len(value) > limit:
            raise InvalidArgument(f"{where}: {len(value)} characters, more than the limit of {limit}")


def check_message(msg: Message, where: str) -> None:
    """Enum values defined and strings within limits, recursively over the set fields."""
    for field, value in msg.ListFields():
        name = f"{where}.{field.name}"
        # A map's value is a Mapping; asking the descriptor (GetOptions) would load descriptor_pb2 (~0.5 MiB).
        if isinstance(value, Mapping):
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if len(key) > MAX_STRING_LENGTH:
                    raise InvalidArgument(f"{name}: a key longer than {MAX_STRING_LENGTH} characters")
                if value_field.message_type is not None:
                    check_message(item, f"{name}[{key[:64]!r}]")
                else:
                    _check_scalar(value_field, item, f"{name}[{key[:64]!r}]")
        elif is_repeated(field):
            for index, item in enumerate(value):
                if field.message_type is not None:
                    check_message(item, f"{name}[{index}]")
                else:
                    _check_scalar(field, item, f"{name}[{index}]")
        elif field.message_type is not None:
            check_message(value, name)
        else:
            _check_scalar(field, value, name)


def validate(rpc: str, request: Message) -> None:
    """Raise InvalidArgument naming the first problem of rpc's request."""
    for path in REQUIRED.get(rpc, ()):
        if not _is_set(request, path):
            raise InvalidArgument(f"{rpc}: {path} is required")
    check_message(request, type(request).__name__)
