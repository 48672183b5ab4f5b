"""The descriptor pool of driftserve's generated protobuf code (hand-written, not generated).

Triton's Python client registers the very same ``inference.*`` messages in protobuf's default
pool. Generating into a private pool lets driftserve and ``tritonclient`` live in one process
(tests, the load generator, user code); the wire format does not depend on the pool.
``scripts/gen_protos.py`` points every generated module here.
"""

from google.protobuf import descriptor_pb2, descriptor_pool

POOL = descriptor_pool.DescriptorPool()


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """``POOL`` plus grpc.health.v1, for server reflection over both processes' services."""
    from grpc_health.v1 import health_pb2

    for descriptor in (health_pb2.DESCRIPTOR,):
        try:
            POOL.FindFileByName(descriptor.name)
        except KeyError:
            proto = descriptor_pb2.FileDescriptorProto()
            descriptor.CopyToProto(proto)
            POOL.Add(proto)
    return POOL
