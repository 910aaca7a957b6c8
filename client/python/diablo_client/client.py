"""The Client class: jobs, files, events and artifacts of a diablo-scheduler."""

import copy
import hashlib
import json
import os
import random
import time
from pathlib import Path, PurePosixPath

import grpc
from google.protobuf import json_format

from ._stubs import load as _load_stubs

_pb = _load_stubs()
file_pb2, file_pb2_grpc = _pb["file"]
job_pb2, job_pb2_grpc = _pb["job"]
spec_pb2, _ = _pb["spec"]
system_pb2, system_pb2_grpc = _pb["system"]
worker_pb2, worker_pb2_grpc = _pb["worker"]

CHUNK_BYTES = 1 << 20  # the API's largest upload/download message payload
# Spec fields that name input files (dotted paths into the spec dict).
INPUT_FIELDS = ("model", "data.train", "data.eval", "init_adapter")
FINAL_STATES = frozenset({job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED})


class DiabloError(Exception):
    """A failed call: ``code`` is a grpc.StatusCode, ``message`` the explanation.

    Raised for every error the server returns (the grpc.RpcError is the
    ``__cause__``) and for problems the client finds before calling (then
    ``code`` is INVALID_ARGUMENT, like the server's own validation)."""

    def __init__(self, code, message):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, error):
        code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
        details = error.details() if callable(getattr(error, "details", None)) else str(error)
        return cls(code, details or "")


# The rules of common/safe_name.h: names that become paths (upload names,
# artifact names) stay relative, inside their folder, free of control
# characters, and bounded.
MAX_NAME_SEGMENT_BYTES = 255
MAX_RELATIVE_PATH_BYTES = 1024


def check_relative_name(name, what, allow_folders=True):
    """Raises DiabloError(INVALID_ARGUMENT) unless `name` is a safe relative path."""
    def refuse(rule):
        raise DiabloError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} {name!r} {rule}")
    encoded = name.encode("utf-8", "surrogateescape")
    if not name:
        refuse("is empty")
    if len(encoded) > MAX_RELATIVE_PATH_BYTES:
        refuse(f"is longer than {MAX_RELATIVE_PATH_BYTES} bytes")
    if name.startswith("/"):
        refuse("is absolute: it must be a relative path")
    if not allow_folders and "/" in name:
        refuse("contains '/': it must be a file name, not a path")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            refuse("has an empty, '.' or '..' part: names must stay inside their folder")
        if len(segment.encode("utf-8", "surrogateescape")) > MAX_NAME_SEGMENT_BYTES:
            refuse(f"has a part longer than {MAX_NAME_SEGMENT_BYTES} bytes")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in segment):
            refuse("contains a control character")
        if "\\" in segment:
            refuse("contains a backslash; use '/' between folders")


class ChecksumError(DiabloError):
    """A downloaded artifact's SHA-256 (or size) differs from the job's record; nothing was kept."""

    def __init__(self, message):
        super().__init__(grpc.StatusCode.DATA_LOSS, message)


def state_name(state):
    """'queued', 'running', ... for a JobState value."""
    return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def _state_value(state):
    if isinstance(state, int):
        return state
    name = str(state).upper()
    return job_pb2.JobState.Value(name if name.startswith("JOB_STATE_") else "JOB_STATE_" + name)


def spec_from_file(path):
    """Reads a job config (the YAML or JSON file `diablo train` reads) into a dict.

    YAML needs PyYAML; without it only JSON files can be read (JSON is YAML,
    so a .yaml file holding JSON works too)."""
    text = Path(path).read_text()
    try:
        import yaml
    except ImportError:
        yaml = None
    try:
        doc = yaml.safe_load(text) if yaml is not None else json.loads(text)
    except Exception as e:
        hint = "" if yaml is not None else " (PyYAML is not installed, so only JSON can be read: pip install pyyaml)"
        raise DiabloError(grpc.StatusCode.INVALID_ARGUMENT, f"{path}: cannot parse: {e}{hint}") from e
    if not isinstance(doc, dict):
        raise DiabloError(grpc.StatusCode.INVALID_ARGUMENT, f"{path}: expected a mapping of config fields")
    return doc


def _sha256_of(path):
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            sha.update(block)
    return sha.hexdigest()


def _field(doc, dotted):
    """(parent dict, key) of a dotted field in doc, or (None, None) when absent."""
    *parents, key = dotted.split(".")
    node = doc
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or key not in node:
        return None, None
    return node, key


class Client:
    """A connection to a diablo-scheduler.

    server: "host:port" (default: $DIABLO_SERVER, else 127.0.0.1:50051).
    token: the API token, sent as ``authorization: Bearer <token>`` on every
      call (default: $DIABLO_TOKEN; None or "" sends none).
    tls_ca: path of the scheduler's CA certificate (PEM); enables TLS.  With
      tls_cert and tls_key (PEM paths) the client authenticates itself too.
    timeout: deadline of each unary call, seconds.  Uploads and downloads get
      ``timeout + 1 s per MiB``; a watch stream gets ``stream_timeout`` and is
      reopened (from the last event seen) when that passes.
    retries: how often an idempotent call is retried after UNAVAILABLE (a
      scheduler restarting), with backoff.

    A Client is thread-safe: one channel, shared by all calls.  Use it as a
    context manager, or call close().
    """

    def __init__(self, server=None, token=None, tls_ca=None, timeout=30, *, tls_cert=None, tls_key=None,
                 retries=4, stream_timeout=3600, options=None):
        self.server = server or os.environ.get("DIABLO_SERVER") or "127.0.0.1:50051"
        if token is None:
            token = os.environ.get("DIABLO_TOKEN")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.stream_timeout = float(stream_timeout)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        channel_options = [
            ("grpc.keepalive_time_ms", 30000),
            ("grpc.keepalive_timeout_ms", 10000),
            ("grpc.max_receive_message_length", 16 << 20),
            ("grpc.max_send_message_length", 16 << 20),
            *(options or []),
        ]
        if tls_ca or tls_cert:
            if bool(tls_cert) != bool(tls_key):
                raise ValueError("tls_cert and tls_key go together")
            read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
            credentials = grpc.ssl_channel_credentials(root_certificates=read(tls_ca), private_key=read(tls_key),
                                                       certificate_chain=read(tls_cert))
            self.channel = grpc.secure_channel(self.server, credentials, options=channel_options)
        else:
            self.channel = grpc.insecure_channel(self.server, options=channel_options)
        self.jobs = job_pb2_grpc.JobServiceStub(self.channel)
        self.files = file_pb2_grpc.FileServiceStub(self.channel)
        self.system = system_pb2_grpc.SystemServiceStub(self.channel)
        self.fleet = worker_pb2_grpc.FleetServiceStub(self.channel)

    # ---- plumbing

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _backoff(self, attempt):
        time.sleep(min(0.25 * (2 ** attempt), 5.0) * (0.5 + random.random() / 2))

    def _call(self, method, request, timeout=None, retry=True):
        """One unary call with a deadline; retried after UNAVAILABLE when retry."""
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
            except grpc.RpcError as e:
                if retry and e.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    self._backoff(attempt)
                    attempt += 1
                    continue
                raise DiabloError.from_rpc(e) from e

    # ---- system

    def version(self):
        """The scheduler's GetVersionResponse (version, git_commit, uptime_seconds, api_versions)."""
        return self._call(self.system.GetVersion, system_pb2.GetVersionRequest())

    def workers(self):
        """The registered workers (list of WorkerInfo)."""
        return list(self._call(self.fleet.ListWorkers, worker_pb2.ListWorkersRequest()).workers)

    # ---- files

    def find_file(self, sha256):
        """The tenant's uploaded File with this content, or None."""
        try:
            return self._call(self.files.FindFile, file_pb2.FindFileRequest(sha256=sha256))
        except DiabloError as e:
            if e.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def upload_file(self, path, name=None):
        """Uploads a local file (unless the tenant already has one with its content); returns its id.

        A spec refers to it as ``upload://<id>``.  The content goes in 1 MiB
        messages after a header with its name, size and SHA-256; the server
        recomputes the digest and keeps nothing on a mismatch."""
        path = Path(path)
        if not path.is_file():
            raise DiabloError(grpc.StatusCode.INVALID_ARGUMENT, f"{path}: not a file")
        digest = _sha256_of(path)
        existing = self.find_file(digest)
        if existing is not None:
            return existing.id
        check_relative_name(name or path.name, "the upload name", allow_folders=False)
        size = path.stat().st_size
        header = file_pb2.UploadHeader(name=name or path.name, size_bytes=size, sha256=digest)

        def messages():
            yield file_pb2.UploadFileRequest(header=header)
            with open(path, "rb") as f:
                while block := f.read(CHUNK_BYTES):
                    yield file_pb2.UploadFileRequest(data=block)

        # Each try (_call retries after UNAVAILABLE) streams the file again from its start.
        upload = lambda _request, **kw: self.files.UploadFile(messages(), **kw)  # noqa: E731
        uploaded = self._call(upload, None, timeout=self.timeout + size / CHUNK_BYTES)
        return uploaded.id

    def list_files(self):
        """All the tenant's uploaded files (list of File)."""
        files, token = [], ""
        while True:
            page = self._call(self.files.ListFiles, file_pb2.ListFilesRequest(page_size=500, page_token=token))
            files.extend(page.files)
            token = page.next_page_token
            if not token:
                return files

    def delete_file(self, file_id):
        """Deletes an uploaded file (FAILED_PRECONDITION while a queued or running job uses it)."""
        file_id = file_id.removeprefix("upload://")
        self._call(self.files.DeleteFile, file_pb2.DeleteFileRequest(id=file_id))

    # ---- jobs

    def upload_inputs(self, spec, base_dir=None):
        """Returns a copy of spec whose local input files are uploaded and named upload://<id>.

        The fields are model, data.train, data.eval and init_adapter.  A value
        with "://" (upload://, s3://, file://) is left alone; a path to a file
        (relative ones against base_dir, default the working directory) is
        uploaded; an absolute path that is not a file here (a directory on
        storage the workers share) is sent as it is; a relative path that is
        not a file is an error."""
        spec = copy.deepcopy(spec)
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        for dotted in INPUT_FIELDS:
            parent, key = _field(spec, dotted)
            if parent is None or not isinstance(parent[key], str):
                continue
            value = parent[key]
            if not value or "://" in value:
                continue
            path = Path(value).expanduser()
            if not path.is_absolute():
                path = base / path
            if path.is_file():
                parent[key] = "upload://" + self.upload_file(path)
            elif not Path(value).expanduser().is_absolute():
                raise DiabloError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"{dotted}: {value} is not a file here (relative paths are uploaded; directories "
                                  "must be on storage the workers share, given as an absolute path or an s3:// URI)")
        return spec

    def submit(self, spec, name="", labels=None, priority=0, devices_per_node=1, nodes=1, max_retries=2,
               idempotency_key=None, queue_anyway=False, upload_local=True, base_dir=None):
        """Submits a training job; returns the created Job.

        spec: the config `diablo train` reads, as a dict (field names of
          spec.proto in snake_case, e.g. {"model": ..., "method": {"name":
          "diablo", "blocks": 32}, "data": {"train": ...}, "optim": {...}}),
          or a JobSpec message.  output_dir is dropped (the service ignores it).
        upload_local: upload local files named by model / data.train /
          data.eval / init_adapter first (see upload_inputs; relative paths
          are taken against base_dir).  False sends the paths as they are,
          which the scheduler and every worker must then be able to read.
        idempotency_key: a retried submit with the same key returns the first
          job; when None a random key is made, so this call's own retries
          (after UNAVAILABLE) never create a second job.
        queue_anyway: queue even when no registered worker could run it now
          (otherwise such a job is refused with FAILED_PRECONDITION or
          RESOURCE_EXHAUSTED).
        """
        if isinstance(spec, spec_pb2.JobSpec):
            message = spec
        else:
            if not isinstance(spec, dict):
                raise TypeError("spec must be a dict (the training config) or a JobSpec")
            spec = {k: v for k, v in spec.items() if k != "output_dir"}
            if upload_local:
                spec = self.upload_inputs(spec, base_dir)
            message = spec_pb2.JobSpec()
            try:
                json_format.ParseDict(spec, message)
            except json_format.ParseError as e:
                raise DiabloError(grpc.StatusCode.INVALID_ARGUMENT, f"spec: {e}") from e
        request = job_pb2.CreateJobRequest(
            spec=message, name=name or "", labels=dict(labels or {}), priority=priority,
            devices_per_node=devices_per_node, nodes=nodes, max_retries=max_retries,
            idempotency_key=idempotency_key or f"py-{os.urandom(12).hex()}", queue_anyway=queue_anyway)
        return self._call(self.jobs.CreateJob, request)

    def submit_file(self, path, overrides=None, name=None, **kwargs):
        """Submits the job a YAML/JSON config file describes (see submit for the keyword arguments).

        Relative input paths are taken against the file's directory; name
        defaults to the file's stem.  overrides: {"optim.lr": 3e-4, ...} set
        dotted fields before submitting."""
        spec = spec_from_file(path)
        for dotted, value in (overrides or {}).items():
            *parents, key = dotted.split(".")
            node = spec
            for part in parents:
                node = node.setdefault(part, {})
            node[key] = value
        kwargs.setdefault("base_dir", Path(path).resolve().parent)
        return self.submit(spec, name=name or Path(path).stem, **kwargs)

    def get(self, job_id):
        """The Job (NOT_FOUND when it does not exist or belongs to another tenant)."""
        return self._call(self.jobs.GetJob, job_pb2.GetJobRequest(id=job_id))

    def iter_jobs(self, states=None, labels=None, page_size=100):
        """Yields the tenant's jobs, newest first, fetching page after page.

        states: JobState values or names ("queued", "JOB_STATE_RUNNING", ...);
        labels: {key: value} every job must carry."""
        request = job_pb2.ListJobsRequest(states=[_state_value(s) for s in states or []], labels=dict(labels or {}),
                                          page_size=page_size)
        while True:
            page = self._call(self.jobs.ListJobs, request)
            yield from page.jobs
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def list(self, states=None, labels=None, limit=None, page_size=100):
        """The tenant's jobs (newest first) as a list; at most limit when given."""
        jobs = []
        for job in self.iter_jobs(states, labels, page_size if limit is None else min(page_size, max(limit, 1))):
            if limit is not None and len(jobs) >= limit:
                break
            jobs.append(job)
        return jobs

    def cancel(self, job_id, reason=""):
        """Cancels a job (a running one is stopped); returns the Job."""
        return self._call(self.jobs.CancelJob, job_pb2.CancelJobRequest(id=job_id, reason=reason))

    def watch(self, job_id, after_seq=0, follow=True, max_reconnect_s=60, timeout=None):
        """Yields the job's JobEvents with seq > after_seq, in order.

        follow=True keeps streaming until the job reaches a final state and its
        last event was sent; follow=False yields what is recorded and stops.
        A broken stream (UNAVAILABLE, e.g. the scheduler restarting) or one
        that reached stream_timeout is reopened from the last seq seen, so no
        event is lost or repeated; after max_reconnect_s of failures in a row
        the error is raised.  Closing the generator cancels the stream.
        timeout: seconds after which the generator just stops (None: never)."""
        until = None if timeout is None else time.monotonic() + timeout
        last = after_seq
        failing_since = None
        attempt = 0
        while True:
            stream_timeout = self.stream_timeout
            if until is not None:
                stream_timeout = min(stream_timeout, until - time.monotonic())
                if stream_timeout <= 0:
                    return
            call = self.jobs.WatchJob(job_pb2.WatchJobRequest(id=job_id, after_seq=last, follow=follow),
                                      timeout=stream_timeout, metadata=self._metadata)
            try:
                for event in call:
                    failing_since, attempt = None, 0
                    last = event.seq
                    yield event
                return
            except grpc.RpcError as e:
                code = e.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and (follow or until is not None):
                    continue  # the stream's own deadline: reopen at once (or stop, past `timeout`)
                if code != grpc.StatusCode.UNAVAILABLE:
                    raise DiabloError.from_rpc(e) from e
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > max_reconnect_s:
                    raise DiabloError.from_rpc(e) from e
                self._backoff(min(attempt, 3))
                attempt += 1
            finally:
                call.cancel()

    def wait(self, job_id, on_event=None, timeout=None):
        """Follows the job until it ends; returns the final Job.

        on_event(JobEvent) is called for every event (progress bars, logs).
        timeout: seconds; DiabloError(DEADLINE_EXCEEDED) when the job has not
        ended by then (the job itself goes on)."""
        until = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while True:
            remaining = None if until is None else max(until - time.monotonic(), 0.0)
            for event in self.watch(job_id, after_seq=seen, follow=True, timeout=remaining):
                seen = event.seq
                if on_event is not None:
                    on_event(event)
            job = self.get(job_id)
            if job.state in FINAL_STATES:
                return job
            if until is not None and time.monotonic() >= until:
                raise DiabloError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"job {job_id} is still {state_name(job.state)} after {timeout}s")

    def events(self, job_id, after_seq=0):
        """The events recorded so far (a log dump), as a list."""
        return list(self.watch(job_id, after_seq=after_seq, follow=False))

    def artifacts(self, job_id):
        """The job's outputs (list of Artifact: name, size_bytes, sha256); empty until it succeeds."""
        return list(self._call(self.jobs.ListArtifacts, job_pb2.ListArtifactsRequest(job_id=job_id)).artifacts)

    def download(self, job_id, out_dir, only=None):
        """Downloads the job's artifacts under out_dir; returns the paths written.

        only: an artifact name, or a directory prefix such as "adapter", to
        download just those.  Each file is written as a temporary file next to
        its target, checked against the job's record (size and SHA-256) and
        only then renamed into place: a mismatch raises ChecksumError and a
        failed transfer raises DiabloError, leaving no partial file.  A
        broken stream (UNAVAILABLE) resumes at the byte it reached."""
        out_dir = Path(out_dir)
        artifacts = self.artifacts(job_id)
        if only is not None:
            only = only.rstrip("/")
            artifacts = [a for a in artifacts if a.name == only or a.name.startswith(only + "/")]
        if not artifacts:
            raise DiabloError(grpc.StatusCode.NOT_FOUND,
                              f"job {job_id} has no artifacts{' named ' + only if only else ''} "
                              "(they appear when it succeeds)")
        # Every name is checked before anything is written: whoever answers in
        # the server's place must not steer a write outside out_dir.
        for artifact in artifacts:
            check_relative_name(artifact.name, "the server sent artifact name")
        paths = []
        for artifact in artifacts:
            target = out_dir.joinpath(*PurePosixPath(artifact.name).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._download_one(job_id, artifact, target)
            paths.append(target)
        return paths

    def _download_one(self, job_id, artifact, target):
        # A new hidden name next to the target (same filesystem: the rename is atomic),
        # created with the umask's permissions, as the final file should have.
        while True:
            partial = target.parent / f".{target.name}.{os.urandom(6).hex()}.partial"
            try:
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
                break
            except FileExistsError:
                continue
        try:
            sha = hashlib.sha256()
            written = 0
            attempt = 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    request = job_pb2.DownloadArtifactRequest(job_id=job_id, name=artifact.name, offset=written)
                    call = self.jobs.DownloadArtifact(request, timeout=self.timeout + artifact.size_bytes / CHUNK_BYTES,
                                                      metadata=self._metadata)
                    try:
                        for chunk in call:
                            if chunk.offset != written:
                                raise ChecksumError(f"{artifact.name}: chunk at byte {chunk.offset}, expected {written}")
                            out.write(chunk.data)
                            sha.update(chunk.data)
                            written += len(chunk.data)
                        break
                    except grpc.RpcError as e:
                        if e.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                            self._backoff(attempt)
                            attempt += 1
                            continue
                        raise DiabloError.from_rpc(e) from e
                    finally:
                        call.cancel()
                out.flush()
                os.fsync(out.fileno())
            digest = sha.hexdigest()
            if written != artifact.size_bytes or digest != artifact.sha256:
                raise ChecksumError(f"{artifact.name}: got {written} bytes with SHA-256 {digest}, the job's record "
                                    f"says {artifact.size_bytes} bytes with {artifact.sha256}; nothing kept")
            os.replace(partial, target)
        except BaseException:
            try:
                os.unlink(partial)
            except FileNotFoundError:
                pass
            raise

