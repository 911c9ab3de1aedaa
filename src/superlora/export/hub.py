"""``--push-to-hub REPO``: the export folder as one commit to a Hugging Face Hub repository (a model; a
Gradio Space for ``--format space``).

Checked before any work: offline (``HF_HUB_OFFLINE`` set, or the Hub's host does not answer) is one line
and nothing is written, so a push never leaves a local export the user did not ask for without the upload
they did. The upload itself is ``upload_folder``: one commit, so the repository gets all files or none.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from superlora.errors import SuperloraError, quote

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
OFFLINE_VALUES = {"1", "true", "yes", "on"}


def offline_reason() -> str | None:
    """Why the Hub cannot be reached now, or None."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in OFFLINE_VALUES:
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        return f"{host} is unreachable ({exc.strerror or type(exc).__name__})"
    return None


def check_push(repo: str) -> None:
    """Refuse a bad repository id or an offline Hub, in one line, before the export starts."""
    if not REPO_ID.match(repo):
        raise SuperloraError(f"--push-to-hub wants a repository id OWNER/NAME, not {quote(repo)}")
    reason = offline_reason()
    if reason:
        raise SuperloraError(
            f"cannot push to the Hugging Face Hub: offline ({reason}); nothing was exported or uploaded "
            "(export without --push-to-hub, and push the folder later)"
        )


def push(folder: Path, repo: str, private: bool = False, repo_type: str = "model") -> str:
    """Upload ``folder`` to repository ``repo`` of ``repo_type`` (model or space; created if needed); return the
    commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        sdk = {"space_sdk": "gradio"} if repo_type == "space" else {}  # a new Space must name its SDK
        api.create_repo(repo, repo_type=repo_type, private=private, exist_ok=True, **sdk)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo,
            repo_type=repo_type,
            commit_message=f"superlora export: {Path(folder).name}",
        )
    except Exception as exc:  # auth, HTTP, connection: every failure of the Hub is the user's to fix
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:300]
        raise SuperloraError(
            f"push to {repo} failed ({type(exc).__name__}: {first}); the export is complete in {folder}, "
            "nothing was committed to the Hub"
        ) from None
    return str(getattr(info, "commit_url", info))
