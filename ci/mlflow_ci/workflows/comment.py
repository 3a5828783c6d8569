"""The sticky pull-request comment: one per report kind and artifact, updated in place, only ours.

The comment is found again by the hidden marker at the start of its body,
``<!-- mlflow-ci:<kind> artifact=<name> head=<sha> -->``: the report kind and the artifact the
report came in (two calls in one run, with two artifact names, keep two comments), and the
commit the report is for. Three rules keep the comment truthful:

- **only ours**: a comment counts only when the token's own user wrote it. A workflow's
  ``GITHUB_TOKEN`` is an installation token, for which ``GET /user`` answers 403 ("Resource not
  accessible by integration"), and its comments are by ``github-actions[bot]``; any other token
  (a personal one) is whoever ``GET /user`` names; ``--author`` says it for a GitHub App's token
  (``<app-slug>[bot]``). A comment by anyone else that carries the marker (a quote, a copy, a
  forgery) is left alone: never edited, never deleted.
- **never stale**: a run for a commit that is no longer the pull request's head (``GET
  /repos/{o}/{r}/pulls/{n}``: ``head.sha``) does not touch the comment; the run for the newer
  commit writes it. The workflow passes the commit with ``--head-sha`` (the pull request's head,
  not ``GITHUB_SHA``, which is the test merge commit); a run that names no commit never replaces
  a comment made for the current head.
- **never silent**: a missing report (the job died first) still replaces a green comment.

With ``--matrix`` (the ``matrix`` output of ``mlflow-ci projects``) one comment sums up several
projects: a row per project read from ``<report-dir>/<name>/<kind>.json``, each full report
folded below, and a project without a report counted as failed.

The REST API is spoken through :mod:`mlflow_ci.core.http` (the standard library only), so the
comment job needs nothing beyond mlflow-ci itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from mlflow_ci import __version__
from mlflow_ci.core import http, output
from mlflow_ci.core.errors import ConfigError, InfraError
from mlflow_ci.workflows.projects import MatrixEntry, parse_matrix

DEFAULT_API_URL = "https://api.github.com"
# GitHub rejects comment bodies longer than 65536 characters.
MAX_BODY = 65_000
PER_PAGE = 100
TIMEOUT_S = 30
#: Who a workflow's GITHUB_TOKEN comments as (GET /user tells nothing for it: 403).
ACTIONS_BOT = "github-actions[bot]"
_NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')
_KIND = re.compile(r"^[A-Za-z0-9_.-]+$")
_MARKER = re.compile(r"<!-- mlflow-ci:(?P<kind>[A-Za-z0-9_.-]+)(?P<fields>(?: [a-z]+=\S*)*) -->")
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
# Quoted in the marker: no space (fields are split on it) and no ">" (it would end the comment).
_SAFE = "-._~*+@/:,"


@dataclass(frozen=True)
class Marker:
    """What a comment is: the report kind, the artifact the report came in, the commit."""

    kind: str
    artifact: str = ""
    head: str = ""

    def render(self) -> str:
        fields = [f" {key}={quote(value, safe=_SAFE)}" for key, value in
                  (("artifact", self.artifact), ("head", self.head)) if value]  # fmt: skip
        return f"<!-- mlflow-ci:{self.kind}{''.join(fields)} -->"

    @classmethod
    def parse(cls, body: str) -> Marker | None:
        """The marker at the very start of ``body`` (anywhere else it is a quote, not ours)."""
        match = _MARKER.match(body.lstrip())
        if not match:
            return None
        fields = dict(field.split("=", 1) for field in match["fields"].split())
        return cls(match["kind"], unquote(fields.get("artifact", "")), unquote(fields.get("head", "")))

    def same_report(self, other: Marker) -> bool:
        return (self.kind, self.artifact) == (other.kind, other.artifact)


@dataclass(frozen=True)
class CommentResult:
    action: str  # "created", "updated", "skipped" (stale) or "none" (nothing to say)
    comment_id: int | None
    url: str
    reason: str = ""


@dataclass(frozen=True)
class Found:
    comment_id: int
    marker: Marker


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
    artifact: str = "",
    head_sha: str = "",
    author: str = "",
    matrix: str = "",
) -> int:
    """Post or update the one ``kind``/``artifact`` comment on pull request ``pr``; return 0.

    The body is ``<report_dir>/<kind>.md`` with the marker prepended (or, with ``matrix``, the
    summary of the reports in ``<report_dir>/<name>/``). When the report is missing (the checks
    ended before writing it) the comment says so and links ``run_url``, so an earlier green
    comment never outlives a broken commit. A run for a commit that is no longer the pull
    request's head changes nothing (action ``skipped``, exit 0).
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
    if not _KIND.match(kind):
        raise ConfigError(f"--kind {kind!r} is not a report kind (letters, digits, '.', '_', '-').")
    head_sha = head_sha.strip().lower()
    if head_sha and not _SHA.match(head_sha):
        raise ConfigError(
            f"--head-sha {head_sha!r} is not a full commit SHA (40 hex digits).",
            hint="In a workflow pass ${{ github.event.pull_request.head.sha }} through env:.",
        )
    if any(c in artifact for c in "\r\n"):
        raise ConfigError(f"--artifact {artifact!r} spans lines; give the artifact's name.")
    projects = parse_matrix(matrix) if matrix.strip() else None
    marker = Marker(kind=kind, artifact=artifact, head=head_sha)
    if projects is None:
        body = comment_body(report_dir=Path(report_dir), kind=kind, run_url=run_url, marker=marker)
    else:
        body = summary_body(report_dir=Path(report_dir), kind=kind, projects=projects, run_url=run_url,
                            marker=marker)  # fmt: skip
    api = _Api(api_url, token)
    me = author.strip() or token_login(api)
    existing = find_comment(api, repo=repo, pr=pr, marker=marker, login=me)
    stale = stale_reason(api, repo=repo, pr=pr, head_sha=head_sha, existing=existing)
    what = f"the mlflow-ci {kind} comment{f' ({artifact})' if artifact else ''} on {repo}#{pr}"
    if stale:
        result = CommentResult("skipped", existing.comment_id if existing else None, "", stale)
        output.info(f"left {what} as it is: {stale}.")
    elif existing is None and projects == []:
        # No project touched and nothing said before: no comment is the right comment.
        result = CommentResult("none", None, "", "no project changed and no earlier comment")
        output.info(f"no project changed, so no {what} was created.")
    elif existing is None:
        data = api.write("POST", f"/repos/{repo}/issues/{pr}/comments", {"body": body})
        result = CommentResult("created", int(data["id"]), str(data.get("html_url", "")))
    else:
        data = api.write("PATCH", f"/repos/{repo}/issues/comments/{existing.comment_id}", {"body": body})
        result = CommentResult("updated", int(data["id"]), str(data.get("html_url", "")))
    if as_json:
        output.emit_json({"action": result.action, "comment_id": result.comment_id, "url": result.url,
                          "author": me, "head_sha": head_sha or None, "reason": result.reason or None})  # fmt: skip
    if result.action in ("created", "updated"):
        output.info(f"{result.action} {what} as {me}: {result.url or result.comment_id}")
    return 0


def comment_body(
    *, report_dir: Path, kind: str, run_url: str | None = None, marker: Marker | None = None
) -> str:
    """The Markdown to post: the report's, starting with the marker, cut to GitHub's size limit."""
    marker = marker or Marker(kind)
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
    return _finish(marker, _without_marker(text), footer=_footer(marker))


def summary_body(
    *, report_dir: Path, kind: str, projects: list[MatrixEntry], run_url: str | None, marker: Marker
) -> str:
    """One comment for several projects: a row each (verdict, run, what failed), then each
    project's report folded. A project without a readable report counts as failed."""
    if not projects:
        text = (
            f"### mlflow-ci {kind}: no MLflow project changed\n\n"
            "This pull request touches no MLflow project (nor a file a project's `watch:` lists), "
            f"so no {kind} check ran.\n"
        )
        return _finish(marker, text, footer=_footer(marker))
    rows, folds, failed = [], [], 0
    for entry in projects:
        folder = report_dir / entry.name
        verdict, run_id, notes = _read_report(folder / f"{kind}.json")
        if verdict != "pass":
            failed += 1
        if verdict is None:
            where = f"; see [the workflow run]({run_url})" if run_url else ""
            notes = notes or f"the job ended before writing `{kind}.json`{where}"
        icon = {"pass": "✅ pass", "fail": "❌ fail"}.get(verdict or "", "❌ no report")
        run = _code(run_id) if run_id else ""
        rows.append(f"| {_code(entry.project)} | {icon} | {run} | {_cell(notes)} |")
        markdown = folder / f"{kind}.md"
        if markdown.is_file():
            shown = (verdict or "no verdict").upper()
            folds.append(
                f"<details{' open' if verdict != 'pass' else ''}><summary><code>{_html(entry.project)}</code>: "
                f"{shown}</summary>\n\n{_without_marker(markdown.read_text(encoding='utf-8')).strip()}\n\n</details>\n"
            )
    n = len(projects)
    overall = "**PASS**" if failed == 0 else f"**FAIL** ({failed} of {n} failed)"
    heading = f"### {'✅' if failed == 0 else '❌'} mlflow-ci {kind}: {n} project{'s' if n != 1 else ''} — {overall}"
    text = "\n".join(
        [heading, "", "| project | verdict | MLflow run | notes |", "|---|---|---|---|", *rows, ""]
    )
    budget = MAX_BODY - len(text) - 1_000
    kept = 0
    for fold in folds:
        if len(fold) + 1 > budget:
            break
        text += "\n" + fold
        budget -= len(fold) + 1
        kept += 1
    if kept < len(folds):
        text += (f"\n{len(folds) - kept} report{'s' if len(folds) - kept != 1 else ''} left out to stay "
                 "under GitHub's comment size limit: they are in the workflow's artifacts.\n")  # fmt: skip
    return _finish(marker, text, footer=_footer(marker))


def _read_report(path: Path) -> tuple[str | None, str, str]:
    """(verdict, run id, what failed or warned) of a report file; verdict None when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "", ""
    except (OSError, ValueError):
        return None, "", f"unreadable report `{path.name}`"
    if not isinstance(data, dict) or data.get("verdict") not in ("pass", "fail"):
        return None, "", f"`{path.name}` holds no verdict"
    failures = [str(f) for f in data.get("failures") or []]
    warnings = [str(w) for w in data.get("warnings") or []]
    notes = []
    if failures:
        notes.append("failed: " + ", ".join(failures))
    if warnings:
        notes.append(f"⚠️ {len(warnings)} warning{'s' if len(warnings) != 1 else ''}")
    return str(data["verdict"]), str(data.get("run_id") or ""), "; ".join(notes)


def _without_marker(text: str) -> str:
    """The report without a marker of its own (the comment gets the caller's)."""
    stripped = text.lstrip()
    match = _MARKER.match(stripped)
    return stripped[match.end() :].lstrip("\n") if match else text


def _footer(marker: Marker) -> str:
    return (
        f"\n<sub>mlflow-ci {marker.kind} report for commit {marker.head[:12]}.</sub>\n" if marker.head else ""
    )


def _finish(marker: Marker, text: str, *, footer: str = "") -> str:
    text = f"{marker.render()}\n{text}"
    if len(text) + len(footer) > MAX_BODY:
        cut = "\n\n… (truncated: the full report is in the workflow's artifacts)\n"
        text = text[: MAX_BODY - len(cut) - len(footer)] + cut
    return text + footer


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{_cell(text).replace('`', chr(39))}`"


def _html(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def token_login(api: _Api) -> str:
    """Who the token writes comments as: ``GET /user``, or ``github-actions[bot]`` when GitHub
    answers 403 there, as it does for an installation token (a workflow's GITHUB_TOKEN)."""
    status, data = api.get_allowing("/user", allow=(403,))
    if status == 403:
        output.info(f"the token has no user of its own (GET /user: 403): taking it for {ACTIONS_BOT}.")
        return ACTIONS_BOT
    login = data.get("login") if isinstance(data, dict) else None
    if not isinstance(login, str) or not login:
        raise InfraError("The GitHub API answered GET /user without a login.")
    return login


def find_comment(api: _Api, *, repo: str, pr: int, marker: Marker, login: str) -> Found | None:
    """Our comment for ``marker``'s report on ``pr`` (following pages): the first by ``login``
    whose marker names the same kind and artifact; failing that, the first of ours of that kind
    whose marker names no artifact (written before markers named one), which this run adopts.
    Comments by anyone else are never returned."""
    url: str | None = f"/repos/{repo}/issues/{pr}/comments?per_page={PER_PAGE}"
    adoptable: Found | None = None
    while url:
        comments, url = api.get_page(url)
        for comment in comments:
            found = Marker.parse(str(comment.get("body") or ""))
            if found is None or found.kind != marker.kind:
                continue
            if not _by(comment, login):
                if found.same_report(marker):
                    user = (comment.get("user") or {}).get("login", "?")
                    output.info(f"comment {comment.get('id')} by {user} carries the marker but is not "
                                f"{login}'s: leaving it alone.")  # fmt: skip
                continue
            if found.same_report(marker):
                return Found(int(comment["id"]), found)
            if adoptable is None and not found.artifact:
                adoptable = Found(int(comment["id"]), found)
    return adoptable


def _by(comment: dict[str, Any], login: str) -> bool:
    user = comment.get("user")
    author = user.get("login") if isinstance(user, dict) else None
    return isinstance(author, str) and author.lower() == login.lower()  # logins ignore case


def stale_reason(api: _Api, *, repo: str, pr: int, head_sha: str, existing: Found | None) -> str | None:
    """Why this run must not write, or None. Needs the pull request's head only when this run
    names its commit, or when the comment it would replace names one."""
    if not head_sha and not (existing and existing.marker.head):
        return None
    current = pull_head(api, repo=repo, pr=pr)
    if head_sha and head_sha != current:
        return (f"this run reports on commit {head_sha[:12]}, but the pull request's head is now "
                f"{current[:12]}; the run for that commit writes the comment")  # fmt: skip
    if not head_sha and existing and existing.marker.head == current:
        return (f"the comment reports on the pull request's head ({current[:12]}) and this run does "
                "not name its commit (--head-sha)")  # fmt: skip
    return None


def pull_head(api: _Api, *, repo: str, pr: int) -> str:
    """The commit at the head of pull request ``pr`` now."""
    _, data = api.get_allowing(f"/repos/{repo}/pulls/{pr}")
    head = data.get("head") if isinstance(data, dict) else None
    sha = head.get("sha") if isinstance(head, dict) else None
    if not isinstance(sha, str) or not sha:
        raise InfraError(f"The GitHub API answered GET /repos/{repo}/pulls/{pr} without head.sha.")
    return sha.lower()


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
        _, data, headers = self._send("GET", self._url(path_or_url), None)
        if not isinstance(data, list):
            raise InfraError(f"The GitHub API returned {type(data).__name__} for a list of comments.")
        match = _NEXT_LINK.search(headers.get("Link", "") or "")
        return data, (match.group(1) if match else None)

    def get_allowing(self, path: str, *, allow: tuple[int, ...] = ()) -> tuple[int, Any]:
        """GET ``path``: (status, JSON). A status in ``allow`` is answered, not raised."""
        status, data, _ = self._send("GET", self._url(path), None, allow=allow)
        return status, data

    def write(self, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        _, data, _ = self._send(method, self._url(path), payload)
        if not isinstance(data, dict) or "id" not in data:
            raise InfraError(f"The GitHub API answered {method} {path} without a comment id.")
        return data

    def _send(
        self, method: str, url: str, payload: dict[str, Any] | None, *, allow: tuple[int, ...] = ()
    ) -> tuple[int, Any, Any]:
        headers = {"Accept": "application/vnd.github+json", "Authorization": f"Bearer {self.token}",
                   "X-GitHub-Api-Version": "2022-11-28", "User-Agent": f"mlflow-ci/{__version__}"}  # fmt: skip
        try:
            answer = http.request(method, url, json=payload, headers=headers, timeout=TIMEOUT_S)
        except http.HttpError as exc:
            raise InfraError(
                f"Could not reach the GitHub API at {self.base} ({method} {url}): {exc.reason}.",
                hint="Check GITHUB_API_URL (GitHub Enterprise uses https://HOST/api/v3) and the network.",
            ) from None
        if answer.status in allow:
            return answer.status, None, answer.headers
        if not answer.ok:
            raise _http_error(method, url, answer.status, answer.body)
        try:
            return answer.status, json.loads(answer.body or b"null"), answer.headers
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
    elif status == 403 and method == "GET":
        hint = (
            "The token may not read it (the job needs `pull-requests: read`), or the API rate limit was hit."
        )
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
