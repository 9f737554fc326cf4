"""What every push needs first: a valid repo id, a token, a reachable hub, and the harness's
git commit for the card. Each problem is one line (UserError) before anything is uploaded."""

from __future__ import annotations


from harness.core.errors import UserError
from harness.core.versions import harness_commit  # noqa: F401  (the card's and the results' commit)


def check_repo_id(repo_id: str | None, flag: str = "--repo-id") -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id = (repo_id or "").strip()
    try:
        if repo_id.count("/") != 1:
            raise HFValidationError("it must be ORG/NAME")
        validate_repo_id(repo_id)
    except HFValidationError as e:
        reason = str(e).splitlines()[0]
        raise UserError(f"{flag} {repo_id!r} is not a hub repo id ({reason}); give ORG/NAME, e.g. my-org/iw-sft-135m") from None
    return repo_id


def token(explicit: str | None = None) -> str:
    """The token to push with: --token, else HF_TOKEN or the one `hf auth login` saved."""
    from huggingface_hub import get_token

    tok = explicit or get_token()
    if not tok:
        raise UserError("no hub token: run `hf auth login` (or `huggingface-cli login`), set HF_TOKEN, or pass --token")
    return tok


def check_reachable() -> None:
    from harness.core.hub import unreachable

    why = unreachable()
    if why:
        raise UserError(f"cannot push: the hub is unreachable ({why}); push from a machine with a connection "
                        "(the folder can be copied there)")


def api(tok: str):
    from huggingface_hub import HfApi

    return HfApi(token=tok)
