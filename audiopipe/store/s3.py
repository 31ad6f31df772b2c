"""A store in S3-compatible object storage (``s3://bucket/prefix``): AWS, MinIO, R2, GCS in S3 mode...

boto3 finds its settings the standard way (``AWS_*`` variables, ``~/.aws`` profiles, an instance role,
``AWS_ENDPOINT_URL`` for a service other than AWS); a store spec never holds a secret, so every
machine brings its own credentials. Objects are named ``<prefix>/<key>`` with the content-addressed
keys of :mod:`audiopipe.store.base`.

A put asks first whether the key is there (HEAD: a second put of the same content costs one request
and uploads nothing). If not, the file is copied into the local cache while hashed (the copy is what
is uploaded, so a source changing meanwhile cannot put wrong bytes under a key), and uploaded with
``If-None-Match: *`` and its SHA-256 for the server to check: of two writers racing on a key one
wins, the other's ``PreconditionFailed`` means "already there", and since the key names the content
both held the same bytes. A service without conditional writes (``NotImplemented``) gets a plain PUT,
harmless for the same reason. Files above ``multipart_threshold`` go through boto3's managed
(multipart) transfer, without the condition, which S3's transfer manager cannot send.

:meth:`S3Store.open_local` downloads into the local cache (``<cache>/objects/xx/<key>``, a temp file
renamed into place) and refuses what does not hash to its key. :meth:`S3Store.url` presigns a GET
(SigV4: at most 7 days) or, given ``public_base``, names the object under that public URL.

Named values (:meth:`S3Store.put_named`) are objects ``<prefix>/manifests/<name>``, put with
``If-None-Match: *`` too: the first writer wins; where the service has no conditional writes, a
second writer overwrites with a value derived from the same inputs, which is harmless.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from audiopipe import paths
from audiopipe.errors import os_reason
from audiopipe.files import fsync_dir
from audiopipe.scratch import discard, part_path
from audiopipe.store.base import (
    MAX_NAMED_SIZE,
    NAMED_SPACE,
    StoredFile,
    StoreError,
    check_key,
    check_name,
    check_named_value,
    make_key,
)
from audiopipe.store.directory import DirectoryStore, hash_file
from audiopipe.store.s3_errors import error_code, s3_error
from audiopipe.store.s3_names import check_public_base, content_type, parse_spec

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MAX_URL_TTL = 7 * 24 * 3600  # SigV4 presigned URLs: AWS refuses a longer X-Amz-Expires
DEFAULT_URL_TTL = MAX_URL_TTL  # a URL must outlast the campaign that sends it
MULTIPART_THRESHOLD = 64 << 20
_CHUNK = 1 << 20


class S3Store:
    """A content-addressed store under ``prefix`` in ``bucket`` (see the module docstring).

    ``public_base``: the public URL the bucket's prefix is served at (``url`` then names objects under
    it instead of presigning); ``cache``: the local folder for downloads (default: the user's cache,
    ``objects`` in :func:`audiopipe.paths.cache_dir`); ``client``: a boto3 S3 client to use instead of
    one configured from the environment."""

    def __init__(self, bucket: str, prefix: str = "", *, public_base: str | None = None,
                 cache: str | Path | None = None, client: S3Client | None = None,
                 multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        self.bucket, self.prefix = parse_spec(f"s3://{bucket}/{prefix}")
        self.public_base = check_public_base(public_base) if public_base is not None else None
        self._cache_root = Path(cache).expanduser() if cache is not None else None
        self._cache: DirectoryStore | None = None
        self._client = client
        self._lock = threading.Lock()
        self.multipart_threshold = multipart_threshold

    @classmethod
    def from_spec(cls, spec: str, *, public_base: str | None = None, cache: str | Path | None = None) -> S3Store:
        bucket, prefix = parse_spec(spec)
        return cls(bucket, prefix, public_base=public_base, cache=cache)

    @property
    def spec(self) -> str:
        return f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def object_key(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @property
    def client(self) -> S3Client:
        """The boto3 client (thread safe), made on first use from the standard AWS configuration."""
        with self._lock:
            if self._client is None:
                with self._errors("connect to"):
                    config = Config(signature_version="s3v4", retries={"mode": "standard"},
                                    connect_timeout=10, read_timeout=60)
                    self._client = boto3.session.Session().client("s3", config=config)
            return self._client

    @property
    def cache(self) -> DirectoryStore:
        """The local cache of objects, itself a directory store (verified, atomic, read only files)."""
        if self._cache is None:
            try:
                root = self._cache_root or paths.cache_dir() / "objects"
            except RuntimeError as exc:
                raise StoreError(f"no local cache folder for the store {self.spec}: {exc}") from None
            self._cache = DirectoryStore(root)
        return self._cache

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            client = self._client
            endpoint = client.meta.endpoint_url if client is not None else os.environ.get("AWS_ENDPOINT_URL")
            raise s3_error(exc, doing=doing, spec=self.spec, bucket=self.bucket, endpoint=endpoint) from None

    def put(self, path: Path, *, suffix: str) -> StoredFile:
        make_key("0" * 64, suffix)  # a bad suffix is refused before anything is read or sent
        try:
            sha, size = hash_file(path)
        except OSError as exc:
            raise StoreError(f"cannot put {path.name} into the store {self.spec}: {os_reason(exc)}") from None
        stored = StoredFile(make_key(sha, suffix), sha, size)
        with self._errors(f"put {path.name} into"):
            there = self._size_of(self.object_key(stored.key))
            if there == size:
                return stored  # content-addressed: the same bytes are there already
            local = self._snapshot(path, stored)
            # an object of another size under a content key is damage: write over it, unconditionally
            self._upload(local, stored, conditional=there is None)
        return stored

    def _size_of(self, object_key: str) -> int | None:
        """The size of the object (HEAD), None when there is none."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=object_key)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def _snapshot(self, path: Path, stored: StoredFile) -> Path:
        """A private copy of ``path`` in the local cache, checked to hold the bytes hashed for the key."""
        copy = self.cache.put(path, suffix=stored.key[64:])
        if copy.key != stored.key:
            raise StoreError(f"{path.name} changed while it was put into the store {self.spec}")
        return self.cache.path_of(stored.key)

    def _upload(self, local: Path, stored: StoredFile, *, conditional: bool) -> None:
        object_key = self.object_key(stored.key)
        if stored.size > self.multipart_threshold:
            config = TransferConfig(multipart_threshold=self.multipart_threshold,
                                    multipart_chunksize=max(self.multipart_threshold, 5 << 20))
            self.client.upload_file(str(local), self.bucket, object_key, Config=config,
                                    ExtraArgs={"ChecksumAlgorithm": "SHA256", "ContentType": content_type(stored.key)})
            return
        body = local.read_bytes()
        digest = hashlib.sha256(body).digest()
        if digest.hex() != stored.sha256:
            raise StoreError(f"the cached copy of {stored.key} for the store {self.spec} is damaged: delete it "
                             f"from {self.cache.root} and put the file again")
        try:
            self._put_object(object_key, body, digest, conditional=conditional)
        except ClientError as exc:
            code = error_code(exc)
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                return  # another writer put this key (the same bytes: the key names them) first
            if code not in ("NotImplemented", "501") or not conditional:
                raise
            # no conditional writes on this service: an overwrite writes the same bytes anyway
            self._put_object(object_key, body, digest, conditional=False)

    def put_named(self, name: str, data: bytes) -> bool:
        object_key = self._named_key(name)
        check_named_value(name, data)
        digest = hashlib.sha256(data).digest()
        with self._errors(f"write {NAMED_SPACE}/{name[:12]}… in"):
            try:
                self._put_object(object_key, data, digest, conditional=True)
            except ClientError as exc:
                code = error_code(exc)
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                    return False  # another writer named it first
                if code not in ("NotImplemented", "501"):
                    raise
                if self._size_of(object_key) is not None:
                    return False
                self._put_object(object_key, data, digest, conditional=False)
        return True

    def get_named(self, name: str) -> bytes | None:
        object_key = self._named_key(name)
        with self._errors(f"read {NAMED_SPACE}/{name[:12]}… in"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=object_key)
            except ClientError as exc:
                if error_code(exc) in ("NoSuchKey", "404"):
                    return None
                raise
            data = answer["Body"].read(MAX_NAMED_SIZE + 1)
            answer["Body"].close()
        return check_named_value(name, data)

    def _named_key(self, name: str) -> str:
        named = f"{NAMED_SPACE}/{check_name(name)}"
        return f"{self.prefix}/{named}" if self.prefix else named

    def _put_object(self, object_key: str, body: bytes, digest: bytes, *, conditional: bool) -> None:
        """One PUT, which the server refuses when the body does not hash to ``digest`` (and, when
        ``conditional``, when the key exists: ``If-None-Match: *``)."""
        checksum = base64.b64encode(digest).decode("ascii")
        kind = content_type(object_key)
        if conditional:
            self.client.put_object(Bucket=self.bucket, Key=object_key, Body=body, ContentType=kind,
                                   ChecksumSHA256=checksum, IfNoneMatch="*")
        else:
            self.client.put_object(Bucket=self.bucket, Key=object_key, Body=body, ContentType=kind,
                                   ChecksumSHA256=checksum)

    def open_local(self, key: str) -> Path:
        cached = self.cache.path_of(key)
        if cached.is_file():
            return cached
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = part_path(cached)
        except OSError as exc:
            raise StoreError(f"cannot fetch {key} from the store {self.spec}: the cache {self.cache.root}: "
                             f"{os_reason(exc)}") from None
        try:
            self._download(key, tmp)
            os.chmod(tmp, 0o444)
            os.replace(tmp, cached)
        except OSError as exc:
            raise StoreError(f"cannot fetch {key} from the store {self.spec} into {self.cache.root}: "
                             f"{os_reason(exc)}") from None
        finally:
            discard(tmp)
        fsync_dir(cached.parent)
        return cached

    def _download(self, key: str, dest: Path) -> None:
        """The object of ``key`` into ``dest``, refused unless its bytes hash to the key."""
        digest = hashlib.sha256()
        with self._errors(f"fetch {key} from"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            except ClientError as exc:
                if error_code(exc) in ("NoSuchKey", "404"):
                    raise StoreError(f"the store {self.spec} has no file {key}") from None
                raise
            with open(dest, "wb") as out:
                for chunk in answer["Body"].iter_chunks(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        if digest.hexdigest() != key[:64]:
            raise StoreError(f"the object {key} in the store {self.spec} does not hold the content its key names "
                             f"(it hashes to {digest.hexdigest()[:12]}…): refused; delete it and put the file again")

    def exists(self, key: str) -> bool:
        object_key = self.object_key(key)
        with self._errors(f"look for {key} in"):
            return self._size_of(object_key) is not None

    def url(self, key: str, *, ttl: float | None = None) -> str | None:
        object_key = self.object_key(key)
        if self.public_base is not None:
            return f"{self.public_base}/{key}"
        lifetime = DEFAULT_URL_TTL if ttl is None else ttl
        if not lifetime > 0 or math.isinf(lifetime):
            raise StoreError(f"a presigned URL needs a lifetime of a few seconds to 7 days, not {lifetime!r}")
        if lifetime > MAX_URL_TTL:
            raise StoreError(f"an S3 presigned URL lives at most 7 days ({MAX_URL_TTL} s), not {lifetime:g} s: "
                             "ask for less, or serve the bucket publicly and give its public URL")
        with self._errors(f"sign a URL for {key} in"):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": object_key}, ExpiresIn=math.ceil(lifetime))

    def describe(self) -> str:
        """The spec (``s3://bucket/prefix``) that reopens this store: never a credential nor an endpoint."""
        return self.spec

    def __repr__(self) -> str:
        return f"S3Store({self.spec!r})"
