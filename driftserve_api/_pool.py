"""The descriptor pool of driftserve's generated protobuf code (hand-written, not generated).

Triton's Python client registers the very same ``inference.*`` messages in protobuf's default
pool. Generating into a private pool lets driftserve and ``tritonclient`` live in one process
(tests, the load generator, user code); the wire format does not depend on the pool.
``scripts/gen_protos.py`` points every generated module here.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
