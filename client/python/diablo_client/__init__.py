"""diablo_client: a small Python SDK for the DiaBlo fine-tuning service.

    from diablo_client import Client

    with Client("scheduler:50051", token="...") as c:
        job = c.submit_file("job.yaml", name="dates", labels={"team": "nlp"})
        for event in c.watch(job.id):
            print(event)
        paths = c.download(job.id, "out/")

Everything goes through the gRPC API of diablo-scheduler (proto/diablo/v1);
the messages returned are the generated protobuf classes (``Job``,
``JobEvent``, ``Artifact``, ...), reachable as ``diablo_client.job_pb2`` etc.

Generated modules: run ``python client/python/generate.py OUT`` and put OUT
on PYTHONPATH; when they are not importable, the package generates them
itself (from the source tree's proto/, or $DIABLO_PROTO_DIR) into a cache
directory on first import.  See docs/python-client.md.

Errors: every failed call raises :class:`DiabloError` with ``code`` (a
``grpc.StatusCode``) and ``message`` (the server's text); the original
``grpc.RpcError`` is its ``__cause__``.  Problems found on the client side
use the same class: a bad spec or a local path that is not a file is
INVALID_ARGUMENT, a download whose SHA-256 does not match is
:class:`ChecksumError` (DATA_LOSS).
"""

from ._stubs import StubsUnavailable
from .client import (CHUNK_BYTES, FINAL_STATES, INPUT_FIELDS, ChecksumError, Client, DiabloError, file_pb2, job_pb2,
                     spec_from_file, spec_pb2, state_name, system_pb2, worker_pb2)

__all__ = ["Client", "DiabloError", "ChecksumError", "StubsUnavailable", "CHUNK_BYTES", "FINAL_STATES",
           "INPUT_FIELDS", "spec_from_file", "state_name", "file_pb2", "job_pb2", "spec_pb2", "system_pb2",
           "worker_pb2"]
