"""`synthaug export --push ORG/NAME`: the exported folders as a model repo and a dataset
repo on the Hugging Face hub, each in one commit (`upload_folder`), so a repo is either
as before or complete; a rerun uploads again what did not arrive (unchanged files are
not sent twice)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from synthaug.machinery.export import Exported
from synthaug.sources import hub_offline


class ShareError(RuntimeError):
    """An upload that cannot start or was refused; the message says what to do."""


def uploads(exported: Exported) -> list[tuple[str, Path]]:
    """(repo type, folder) of each upload, in order: the LoRA, then the synthetic set."""
    return [("model", exported.lora), ("dataset", exported.dataset)]


def plan_lines(exported: Exported, repo: str, private: bool) -> list[str]:
    """What `push` would upload, and where (`--dry-run`)."""
    visibility = "private" if private else "public"
    lines = []
    for kind, folder in uploads(exported):
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        lines.append(f"{kind} repo {repo} ({visibility}): {len(files)} files")
        lines += [f"  {name}" for name in files[:5]] + (["  ..."] if len(files) > 5 else [])
    return lines


def push(exported: Exported, repo: str, private: bool) -> list[str]:
    """Create (if needed) and upload both repos; their URLs."""

    if hub_offline():
        raise ShareError("HF_HUB_OFFLINE is set: unset it to upload, or use --dry-run")
    token = get_token()
    if not token:
        raise ShareError("no Hugging Face token: run `hf auth login` or set HF_TOKEN, then rerun")
    api, urls, done = HfApi(token=token), [], []
    for kind, folder in uploads(exported):
        try:
            api.create_repo(repo, repo_type=kind, private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo,
                repo_type=kind,
                folder_path=folder,
                commit_message="synthaug export",
            )
        except (HfHubHTTPError, OSError) as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            kept = f"; the {done[0]} repo is complete" if done else ""
            raise ShareError(
                f"the hub refused the {kind} repo {repo} ({status or type(error).__name__}: "
                f"{str(error).splitlines()[0][:200]}){kept}; check the token's write access "
                "to the organisation, then rerun the same command"
            ) from None
        done.append(kind)
        urls.append(commit.commit_url)
    return urls
