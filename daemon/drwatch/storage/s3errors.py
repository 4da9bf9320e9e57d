"""S3 errors mapped to honest outcomes: a missing bucket or key is a fact about the backup (``S3Missing``, which
callers turn into findings); access denied, throttling, unreachable endpoints and timeouts are "could not
check" (``S3Unavailable``, a ``ValidatorError``). The classification shared with other AWS clients is
:func:`drwatch.storage.aws.aws_failure`."""

from __future__ import annotations

from drwatch.core.errors import ValidatorError
from drwatch.storage.aws import api_errors, aws_failure, error_code

_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchVersion"}
_ARCHIVED = {"InvalidObjectState"}  # GET of a GLACIER/DEEP_ARCHIVE object that was not restored


def s3_errors() -> tuple[type[BaseException], ...]:
    """What a failing S3 call raises (botocore's roots, aiohttp's, OSError, TimeoutError). botocore is
    imported on first use: it costs ~0.15 s of start-up that a ``check`` of filesystem assets never needs
    (benchmarks/startup_bench.py; tests/test_startup.py keeps it out)."""
    return api_errors()


class S3Unavailable(ValidatorError):
    """Could not talk to the S3 endpoint as needed (denied, throttled, unreachable, timed out)."""


class S3Missing(Exception):
    """The bucket or key does not exist."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


def classify(exc: BaseException, location: str) -> Exception:
    """Map a botocore exception to S3Missing (a fact) or S3Unavailable (could not check); re-raise anything
    else."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        if code in _MISSING or status == "404":
            return S3Missing(code)
        if code in _ARCHIVED:
            # A 403 that is not about permissions: the object must be restored before it can be read.
            return S3Unavailable("archived", f"S3 location {location!r}: object is in an archive storage class "
                                 "and not restored; it cannot be read")
    failure = aws_failure(exc, f"S3 location {location!r}", "s3_error", S3Unavailable)
    if failure is None:
        raise exc
    return failure
