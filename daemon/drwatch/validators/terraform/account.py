"""The account side of a Terraform state's failure domain: the AWS accounts its own resources live in (the account
field of their ARNs) against the account its S3 backend bucket belongs to. A state kept in an account it describes
is lost with that account (compromised and wiped, closed, locked out by an organization policy) exactly when it is
needed to rebuild it: ``state_in_rebuilt_account``.

The bucket's account is ``state_account`` when declared, else the account of the credentials drwatch reads the
state with (STS ``GetCallerIdentity``: S3 gives no bucket owner's account number, GetBucketAcl names a canonical
user id). Declare ``state_account`` when drwatch reads the bucket from another account.
"""

from __future__ import annotations

import re
from typing import Any

from drwatch.core.errors import ValidatorError
from drwatch.core.model import Severity
from drwatch.storage.aws import aws_failure, location_client
from drwatch.storage.s3 import S3Location
from drwatch.validators.terraform.state import StateRun

_ARN_ACCOUNT = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):")


def described_accounts(state: dict[str, Any]) -> set[str]:
    """The AWS account ids in the ARNs of the state's resources (any attribute, at any depth)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and (m := _ARN_ACCOUNT.match(value)):
            found.add(m.group(1))

    for res in state.get("resources") or []:
        if isinstance(res, dict):
            for inst in res.get("instances") or []:
                if isinstance(inst, dict):
                    walk(inst.get("attributes"))
    return found


async def caller_account(s3: S3Location, endpoint_url: str | None) -> str:
    """The account of the S3 location's credentials (STS GetCallerIdentity); ValidatorError when STS cannot say."""
    where = "STS GetCallerIdentity"
    try:
        async with location_client(s3.creds, s3.cfg, "sts", endpoint_url) as sts:
            account = str((await sts.get_caller_identity()).get("Account") or "")
    except ValidatorError:
        raise
    except Exception as exc:
        failure = aws_failure(exc, where, "sts_error")
        if failure is None:
            raise
        raise failure from None
    if not re.fullmatch(r"\d{12}", account):
        raise ValidatorError("sts_error", f"{where} named no account ({account!r})")
    return account


async def judge_account(run: StateRun, state: dict[str, Any], s3: S3Location) -> None:
    """``state_in_rebuilt_account`` (severity as ``region_policy``) when the bucket's account is one the state's
    resources live in; ``account_unknown`` (a warning) when it could not be told."""
    described = described_accounts(state)
    run.figures["accounts_described"] = float(len(described))
    if not described:
        return
    account, how = run.cfg.state_account, "declared state_account"
    if account is None:
        try:
            account = await caller_account(s3, run.cfg.sts_endpoint_url)
        except ValidatorError as exc:
            run.note(Severity.WARNING, "account_unknown", f"the state bucket's account could not be told "
                     f"({exc.message}): set state_account to check it against the accounts the state describes",
                     "bucket")
            return
        how = "the account of the credentials that read it (STS GetCallerIdentity)"
    if account in described:
        names = ", ".join(sorted(described))
        run.note(run.region_severity, "state_in_rebuilt_account", f"the state is stored in account {account} "
                 f"({how}), an account it describes ({names}): losing that account (compromised, closed, locked out) "
                 "takes the state that rebuilds it", "bucket")
