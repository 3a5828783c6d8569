"""The sticky pull-request comment: one per report kind, updated in place.

The comment is found again by the hidden marker ``<!-- mlflow-ci:<kind> -->`` at the start of its
body (see :data:`mlflow_ci.core.report.COMMENT_MARKER`), so every push to a pull request updates the
same comment instead of adding one. The REST API is spoken through :mod:`mlflow_ci.core.http`
(the standard library only), so the comment job needs nothing beyond mlflow-ci itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlflow_ci import __version__
from mlflow_ci.core import http, output
from mlflow_ci.core.errors import ConfigError, InfraError
from mlflow_ci.core.report import COMMENT_MARKER

DEFAULT_API_URL = "https://api.github.com"
# GitHub rejects comment bodies longer than 65536 characters.
MAX_BODY = 65_000
PER_PAGE = 100
TIMEOUT_S = 30
_NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')


@dataclass(frozen=True)
class CommentResult:
    action: str  # "created" or "updated"
    comment_id: int
    url: str


def pr_comment(
    *,
    report_dir: Path,
    kind: str,
    pr: int,
    repo: str,
    token: str,
    api_url: str = DEFAULT_API_URL,
    run_url: str | None = None,
    as_json: bool = False,
) -> int:
    """Post or update the one ``kind`` comment on pull request ``pr`` of ``repo``; return 0.

    The body is ``<report_dir>/<kind>.md`` with the marker prepended when missing. When the report
    is missing (the checks ended before writing it) the comment says so and links ``run_url``,
    so an earlier green comment never outlives a broken commit.
    """
    if not repo or "/" not in repo:
        raise ConfigError(
            f"The repository {repo!r} is not OWNER/NAME.",
            hint="Pass --repo or set GITHUB_REPOSITORY (GitHub Actions sets it).",
        )
    if not token:
        raise ConfigError(
            "No GitHub token: GITHUB_TOKEN is not set.",
            hint="In the workflow step add `env: GITHUB_TOKEN: ${{ github.token }}`.",
        )
    if pr <= 0:
        raise ConfigError(f"--pr must be a pull request number, got {pr}.")
    body = comment_body(report_dir=Path(report_dir), kind=kind, run_url=run_url)
    api = _Api(api_url, token)
    marker = COMMENT_MARKER.format(kind=kind)
    existing = find_comment(api, repo=repo, pr=pr, marker=marker)
    if existing is None:
        data = api.request("POST", f"/repos/{repo}/issues/{pr}/comments", {"body": body})
        result = CommentResult("created", int(data["id"]), str(data.get("html_url", "")))
    else:
        data = api.request("PATCH", f"/repos/{repo}/issues/comments/{existing}", {"body": body})
        result = CommentResult("updated", int(data["id"]), str(data.get("html_url", "")))
    if as_json:
        output.emit_json({"action": result.action, "comment_id": result.comment_id, "url": result.url})
    output.info(
        f"{result.action} the mlflow-ci {kind} comment on {repo}#{pr}: {result.url or result.comment_id}"
    )
    return 0


def comment_body(*, report_dir: Path, kind: str, run_url: str | None = None) -> str:
    """The Markdown to post: the report's, starting with the marker, cut to GitHub's size limit."""
    marker = COMMENT_MARKER.format(kind=kind)
    path = report_dir / f"{kind}.md"
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        output.warning(f"no {kind} report at {path}; posting a comment that says so.")
        where = f" See [the workflow run]({run_url})." if run_url else " See the workflow run's log."
        text = (
            f"### ❌ mlflow-ci {kind}: no report — **FAIL**\n\n"
            f"The {kind} job ended before it wrote its report (`{kind}.md`).{where}\n"
        )
    if not text.lstrip().startswith(marker):
        text = f"{marker}\n{text}"
    if len(text) > MAX_BODY:
        cut = "\n\n… (truncated: the full report is in the workflow's artifacts)\n"
        text = text[: MAX_BODY - len(cut)] + cut
    return text


def find_comment(api: _Api, *, repo: str, pr: int, marker: str) -> int | None:
    """The id of the first comment on ``pr`` whose body starts with ``marker``, following pages."""
    url: str | None = f"/repos/{repo}/issues/{pr}/comments?per_page={PER_PAGE}"
    while url:
        comments, url = api.get_page(url)
        for comment in comments:
            if str(comment.get("body") or "").lstrip().startswith(marker):
                return int(comment["id"])
    return None


class _Api:
    """A minimal GitHub REST client: JSON in and out, errors turned into advice."""

    def __init__(self, base_url: str, token: str) -> None:
        parsed = urlsplit(base_url)
        if parsed.scheme not in ("https", "http") or not parsed.netloc:
            raise ConfigError(f"The GitHub API URL {base_url!r} is not an http(s) URL.")
        self.base = base_url.rstrip("/")
        self.origin = (parsed.scheme, parsed.netloc)
        self.token = token

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith("/"):
            return self.base + path_or_url
        parsed = urlsplit(path_or_url)
        # Never send the token anywhere but the API it was meant for (pagination links included).
        if (parsed.scheme, parsed.netloc) != self.origin:
            raise InfraError(
                f"The GitHub API pointed to {path_or_url}, outside {self.base}; refusing to follow it."
            )
        return path_or_url

    def get_page(self, path_or_url: str) -> tuple[list[dict[str, Any]], str | None]:
        data, headers = self._send("GET", self._url(path_or_url), None)
        if not isinstance(data, list):
            raise InfraError(f"The GitHub API returned {type(data).__name__} for a list of comments.")
        match = _NEXT_LINK.search(headers.get("Link", "") or "")
        return data, (match.group(1) if match else None)

    def request(self, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        data, _ = self._send(method, self._url(path), payload)
        if not isinstance(data, dict) or "id" not in data:
            raise InfraError(f"The GitHub API answered {method} {path} without a comment id.")
        return data

    def _send(self, method: str, url: str, payload: dict[str, Any] | None) -> tuple[Any, Any]:
        headers = {"Accept": "application/vnd.github+json", "Authorization": f"Bearer {self.token}",
                   "X-GitHub-Api-Version": "2022-11-28", "User-Agent": f"mlflow-ci/{__version__}"}  # fmt: skip
        try:
            answer = http.request(method, url, json=payload, headers=headers, timeout=TIMEOUT_S)
        except http.HttpError as exc:
            raise InfraError(
                f"Could not reach the GitHub API at {self.base} ({method} {url}): {exc.reason}.",
                hint="Check GITHUB_API_URL (GitHub Enterprise uses https://HOST/api/v3) and the network.",
            ) from None
        if not answer.ok:
            raise _http_error(method, url, answer.status, answer.body)
        try:
            return json.loads(answer.body or b"null"), answer.headers
        except ValueError:  # not JSON, or not even UTF-8
            raise InfraError(
                f"The GitHub API answered {method} {url} with something that is not JSON."
            ) from None


def _http_error(method: str, url: str, status: int, body: bytes) -> InfraError:
    try:
        detail = json.loads(body or b"{}").get("message", "")
    except (ValueError, AttributeError):
        detail = ""
    said = f" ({detail})" if detail else ""
    message = f"The GitHub API refused {method} {url}: HTTP {status}{said}."
    if status == 401:
        hint = "The token is invalid or expired; the workflow should pass GITHUB_TOKEN: ${{ github.token }}."
    elif status == 403:
        hint = (
            "The token lacks `pull-requests: write`: give the comment job that permission (and the "
            "job calling pr-checks.yml, which caps it). On pull requests from forks GITHUB_TOKEN is "
            "always read-only, so no comment can be posted there; the job summary and the report "
            "artifact still carry the results."
        )
    elif status == 404:
        hint = "The repository or pull request does not exist, or the token cannot see it."
    elif status == 422:
        hint = "GitHub rejected the comment body (too long or malformed)."
    else:
        hint = "GitHub may be having trouble; re-run the job."
    return InfraError(message, hint=hint)
