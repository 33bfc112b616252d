#!/usr/bin/env python3
"""Checks a shop service's gRPC reflection with grpcio, a client that is not tonic's.

Over v1alpha (what older grpcurl releases, Postman and many clients speak) and over v1, the
service must list exactly its own service, grpc.health.v1.Health and both reflection services,
and describe its own service's methods from the descriptors it sends (imports followed), the
way grpcurl's `describe` does. Services named with --absent must be unknown to it. v1alpha is
checked twice: by hand and through grpcio-reflection's own client (ProtoReflectionDescriptorDatabase).

usage: reflect.py ADDRESS SERVICE [--absent NAME]...
exit:  0 when all of that holds; 1 with the reasons when not; 2 when grpcio is missing.
Needs grpcio and grpcio-reflection (services/lib/kit/scripts/get-grpcio installs them).
"""

import sys

try:
    import grpc
    from google.protobuf import descriptor_pb2, descriptor_pool
    from grpc_reflection.v1alpha import reflection_pb2
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
except ImportError as missing:
    print(
        f"reflect.py: {missing}; this needs a Python with grpcio and grpcio-reflection: "
        "run services/lib/kit/scripts/get-grpcio and use the python it prints",
        file=sys.stderr,
    )
    sys.exit(2)

PATHS = {
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
}
ALWAYS = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
TIMEOUT_S = 10


class Reflection:
    """One version's ServerReflectionInfo. v1 and v1alpha messages are the same on the wire
    (v1 is v1alpha renamed), so grpcio-reflection's v1alpha messages serve both."""

    def __init__(self, channel, version):
        self.call = channel.stream_stream(
            PATHS[version],
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )

    def ask(self, **request):
        replies = list(self.call(iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=TIMEOUT_S))
        if len(replies) != 1:
            raise RuntimeError(f"{request}: {len(replies)} replies, expected 1")
        return replies[0]

    def services(self):
        reply = self.ask(list_services="")
        return sorted(s.name for s in reply.list_services_response.service)

    def files(self, **request):
        reply = self.ask(**request)
        if reply.HasField("error_response"):
            return reply.error_response
        return [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in reply.file_descriptor_response.file_descriptor_proto
        ]

    def pool_with(self, symbol):
        """A descriptor pool holding the file that declares `symbol` and all it imports."""
        pool, added = descriptor_pool.DescriptorPool(), set()

        def add(files):
            for f in files:
                if f.name in added:
                    continue
                for dep in f.dependency:
                    if dep not in added:
                        found = self.files(file_by_filename=dep)
                        if not isinstance(found, list):
                            raise RuntimeError(f"{f.name} imports {dep}: {found.error_message}")
                        add(found)
                pool.Add(f)
                added.add(f.name)

        found = self.files(file_containing_symbol=symbol)
        if not isinstance(found, list):
            raise RuntimeError(f"{symbol}: {found.error_message} (code {found.error_code})")
        add(found)
        return pool


def describe(pool, service):
    """The service's methods as grpcurl prints them, each message resolved field by field."""
    lines = []
    for m in pool.FindServiceByName(service).methods:
        for message in (m.input_type, m.output_type):
            for field in message.fields:
                _ = field.message_type.full_name if field.message_type else field.type
        client = "stream " if m.client_streaming else ""
        server = "stream " if m.server_streaming else ""
        lines.append(
            f"  rpc {m.name}({client}.{m.input_type.full_name}) returns ({server}.{m.output_type.full_name});"
        )
    return lines


def check_version(channel, version, service, absent):
    problems, reflection = [], Reflection(channel, version)
    listed, wanted = reflection.services(), sorted([service] + ALWAYS)
    print(f"{version}: lists {', '.join(listed)}")
    if listed != wanted:
        problems.append(f"{version}: lists {listed}, expected exactly {wanted}")
    lines = describe(reflection.pool_with(service), service)
    print(f"{version}: {service} has {len(lines)} methods")
    print("\n".join(lines))
    if not lines:
        problems.append(f"{version}: {service} describes no methods")
    for name in ALWAYS:
        reflection.pool_with(name).FindServiceByName(name)
    for name in absent:
        if not unknown(reflection, name):
            problems.append(f"{version}: {name} is not served here, yet reflection describes it")
    return problems


def unknown(reflection, symbol):
    """Whether the server says NOT_FOUND for `symbol`, in the reply (error_response) or as the
    call's status (tonic's way)."""
    try:
        found = reflection.files(file_containing_symbol=symbol)
    except grpc.RpcError as e:
        return e.code() == grpc.StatusCode.NOT_FOUND
    return not isinstance(found, list) and found.error_code == NOT_FOUND


def check_with_grpcio_client(channel, service):
    """What a tool built on grpcio-reflection sees (it speaks v1alpha)."""
    database = ProtoReflectionDescriptorDatabase(channel)
    listed, wanted = sorted(database.get_services()), sorted([service] + ALWAYS)
    pool = descriptor_pool.DescriptorPool(database)
    methods = [m.name for m in pool.FindServiceByName(service).methods]
    print(f"grpcio-reflection client: lists {', '.join(listed)}; {service}: {', '.join(methods)}")
    return [] if listed == wanted else [f"grpcio-reflection client: lists {listed}, expected {wanted}"]


def shown(error):
    if isinstance(error, grpc.RpcError):
        return f"the call failed: {error.code().name}: {error.details()}"
    return str(error)


def main(argv):
    if len(argv) < 2 or len(argv) % 2 != 0 or any(a != "--absent" for a in argv[2::2]):
        print(__doc__, file=sys.stderr)
        return 1
    address, service, absent = argv[0], argv[1], argv[3::2]
    problems = []
    with grpc.insecure_channel(address) as channel:
        for version in ("v1alpha", "v1"):
            try:
                problems += check_version(channel, version, service, absent)
            except (grpc.RpcError, RuntimeError, KeyError) as e:
                problems.append(f"{version}: {shown(e)}")
        try:
            problems += check_with_grpcio_client(channel, service)
        except (grpc.RpcError, RuntimeError, KeyError) as e:
            problems.append(f"grpcio-reflection client: {shown(e)}")
    for p in problems:
        print(f"PROBLEM {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
