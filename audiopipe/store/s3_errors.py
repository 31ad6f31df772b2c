"""What went wrong talking to S3, as one line a user can act on, without a secret in it.

boto3 raises a dozen kinds of errors (no credentials, an endpoint that does not answer, a server's
``AccessDenied``...) whose own text spans lines, names internals or, for some, echoes request details.
:func:`s3_error` turns each into a :class:`StoreError` that says what failed, where (the ``s3://`` spec
and the endpoint, never a key or a signature) and how to fix it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from audiopipe.store.base import StoreError

_CREDENTIALS = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile of "
                "~/.aws/credentials (or run where an instance role gives them)")
_DENIED = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken", "TokenRefreshRequired", "403"}
_REASONS: tuple[tuple[tuple[type[Exception], ...], str], ...] = (
    ((NoCredentialsError, PartialCredentialsError), "no AWS credentials were found: " + _CREDENTIALS),
    ((ProfileNotFound,), "the AWS profile named by AWS_PROFILE does not exist: fix AWS_PROFILE or add the profile "
                         "to ~/.aws/config"),
    ((NoRegionError,), "no AWS region is configured: set AWS_REGION (or AWS_DEFAULT_REGION)"),
    ((EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError),
     "the S3 endpoint {where} did not answer: check AWS_ENDPOINT_URL and that the service is up and reachable "
     "from here"),
)


def endpoint_of(url: str | None) -> str:
    """The endpoint as a message names it: scheme, host and port only (no user, password or query)."""
    if not url:
        return "AWS's default endpoint"
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def one_line(text: str, limit: int = 160) -> str:
    """A server's words on one line, cut short."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "") or "")


def s3_error(exc: Exception, *, doing: str, spec: str, bucket: str, endpoint: str | None) -> StoreError:
    """The StoreError for ``exc`` raised while ``doing`` (``put a.opus into``) the store ``spec``."""
    where = endpoint_of(endpoint)
    cause = exc.__cause__ or exc.__context__  # boto3's transfer errors wrap botocore's
    if not isinstance(exc, (ClientError, BotoCoreError)) and isinstance(cause, (ClientError, BotoCoreError)):
        return s3_error(cause, doing=doing, spec=spec, bucket=bucket, endpoint=endpoint)
    if isinstance(exc, ClientError):
        return _client_error(exc, doing=doing, spec=spec, bucket=bucket, where=where)
    for kinds, reason in _REASONS:
        if isinstance(exc, kinds):
            return StoreError(f"cannot {doing} {spec}: " + reason.format(where=where))
    words = type(exc).__name__ if isinstance(exc, BotoCoreError) else one_line(str(exc)) or type(exc).__name__
    return StoreError(f"cannot {doing} {spec} at {where}: {words}")


def _client_error(exc: ClientError, *, doing: str, spec: str, bucket: str, where: str) -> StoreError:
    code = error_code(exc)
    if code == "NoSuchBucket":
        return StoreError(f"cannot {doing} {spec}: the bucket {bucket} does not exist at {where}: create it, "
                          "or fix the bucket name (and AWS_ENDPOINT_URL for a service other than AWS)")
    if code in _DENIED:
        return StoreError(f"cannot {doing} {spec}: access denied by {where} ({code}): check the credentials "
                          "(AWS_ACCESS_KEY_ID, AWS_PROFILE) and that they may read and write the bucket "
                          f"{bucket} (s3:GetObject, s3:PutObject)")
    message = one_line(exc.response.get("Error", {}).get("Message", "") or "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    return StoreError(f"cannot {doing} {spec}: {where} answered {status} {code or 'error'}"
                      + (f": {message}" if message else ""))
