"""Hub ids pinned to a commit: a branch or tag (`main`) is resolved to the commit it points at, so the stage
cache keys on the content actually loaded and a moved `main` retrains instead of being silently reused.

Online, huggingface_hub's `model_info` / `dataset_info` gives the commit sha (`HF_ENDPOINT` is honoured). Offline
(`HF_HUB_OFFLINE=1`, or the hub unreachable), the sha huggingface_hub recorded when it downloaded the repo
(`<cache>/<kind>s--<owner>--<name>/refs/<revision>`) is used, with a warning saying so: the hub's branch may have
moved since. A 40-hex revision is already a commit and needs neither. Raises the caller's error class when the
revision can be resolved neither way.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgetune.errors import EdgetuneError

log = logging.getLogger(__name__)

Kind = Literal["model", "dataset"]
COMMIT = re.compile(r"[0-9a-f]{40}")
TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Pinned:
    """A hub repo at one commit. `how`: "hub" (resolved online), "cache" (offline, from the local hub cache's
    record), or "commit" (the configured revision was a commit)."""

    repo_id: str
    kind: Kind
    revision: str  # as configured (default "main")
    sha: str
    how: Literal["hub", "cache", "commit"]

    @property
    def fingerprint(self) -> str:
        return f"hub:{self.repo_id}@{self.sha}"

    def to_dict(self) -> dict[str, str]:
        return {"repo_id": self.repo_id, "kind": self.kind, "revision": self.revision, "sha": self.sha,
                "resolved": self.how}


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now rather than at huggingface_hub's import."""
    return any(os.environ.get(v, "").strip().lower() in TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cache_dir() -> Path:
    """huggingface_hub's cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def cached_sha(repo_id: str, kind: Kind, revision: str) -> str | None:
    """The commit the local hub cache recorded for `revision` of the repo, if it holds that repo."""
    ref = cache_dir() / f"{kind}s--{repo_id.replace('/', '--')}" / "refs" / revision
    try:
        sha = ref.read_text().strip()
    except OSError:
        return None
    return sha if COMMIT.fullmatch(sha) else None


def _online_sha(repo_id: str, kind: Kind, revision: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    info = (api.model_info if kind == "model" else api.dataset_info)(repo_id, revision=revision)
    if not info.sha:
        raise ValueError(f"the hub gave no commit for {repo_id}@{revision}")
    return str(info.sha)


def pin(repo_id: str, revision: str | None, kind: Kind, error: type[EdgetuneError]) -> Pinned:
    """`repo_id` at `revision` (None: main) as a commit; see the module docstring. Raises `error`."""
    revision = revision or "main"
    if COMMIT.fullmatch(revision):
        return Pinned(repo_id, kind, revision, revision, "commit")
    reason = "HF_HUB_OFFLINE is set"
    if not offline():
        from huggingface_hub import errors as hf_errors
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

        # connection failures come from huggingface_hub's HTTP client (httpx2 in 2.x), whose base it re-exports
        transport: type[Exception] = getattr(hf_errors, "HTTPError", HfHubHTTPError)
        try:
            sha = _online_sha(repo_id, kind, revision)
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise error(f"hub {kind} {repo_id!r} has no revision {revision!r}: {str(exc).splitlines()[0]}",
                        f"check the {kind} id and its revision") from exc
        except (OSError, ValueError, transport) as exc:  # unreachable: the cached record, said below
            reason = f"the hub is unreachable ({type(exc).__name__})"
        else:
            log.info("%s %s@%s is commit %s", kind, repo_id, revision, sha[:12])
            return Pinned(repo_id, kind, revision, sha, "hub")
    cached = cached_sha(repo_id, kind, revision)
    if cached is None:
        raise error(f"{reason} and the hub cache ({cache_dir()}) holds no {kind} {repo_id}@{revision}",
                    f"go online once to download it, or give a local {'folder' if kind == 'model' else 'file'}")
    log.warning("%s: using %s %s@%s at commit %s, the one the local hub cache recorded when it was downloaded "
                "(the hub's %s may have moved since)", reason, kind, repo_id, revision, cached[:12], revision)
    return Pinned(repo_id, kind, revision, cached, "cache")
