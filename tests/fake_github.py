"""A small fake of the GitHub REST API on 127.0.0.1, for the PR-comment tests.

GitHub itself is unreachable from here. This fake speaks the paths, headers, pagination
(``Link: <...>; rel="next"``) and error shapes of the few endpoints mlflow-ci uses, as GitHub
documents them, and records every request so tests can assert what mlflow-ci sent:

- ``GET /user``: the token's own user. An installation token -- the ``GITHUB_TOKEN`` of a
  workflow -- has no user: GitHub answers 403 "Resource not accessible by integration", and the
  comments such a token writes are authored by ``github-actions[bot]`` (type ``Bot``; a GitHub
  App's token writes as ``<app-slug>[bot]``). A personal token gets its user.
  ``FakeGitHub()`` is an Actions token, ``FakeGitHub(bot="acme-ml[bot]")`` an App's,
  ``FakeGitHub(login="octocat")`` a personal token of octocat's.
- ``GET /repos/{owner}/{repo}/pulls/{number}``: the pull request with its ``head.sha`` (404 when
  there is no such pull request).
- ``GET``/``POST /repos/{owner}/{repo}/issues/{number}/comments`` and ``PATCH
  /repos/{owner}/{repo}/issues/comments/{id}``: comments, each with its author in ``user``. As on
  GitHub, a token that may write to pull requests may also edit other people's comments, so the
  tests (not the fake) are what prove that mlflow-ci leaves them alone.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

LIST = re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/issues/(?P<pr>\d+)/comments$")
ONE = re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/issues/comments/(?P<id>\d+)$")
PULL = re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/pulls/(?P<pr>\d+)$")
ACTIONS_BOT = "github-actions[bot]"
#: GitHub's answer to GET /user with an installation token (a workflow's GITHUB_TOKEN).
NOT_FOR_INTEGRATIONS = {
    "message": "Resource not accessible by integration",
    "documentation_url": "https://docs.github.com/rest/users/users#get-the-authenticated-user",
    "status": "403",
}


def user_object(login: str) -> dict[str, Any]:
    """A user as GitHub embeds it in a comment (and answers GET /user)."""
    return {"login": login, "id": sum(login.encode()), "type": "Bot" if login.endswith("[bot]") else "User"}


@dataclass
class FakeGitHub:
    token: str = "test-token"
    #: the personal token's user; None: an installation token, which has no user and posts as ``bot``
    login: str | None = None
    #: who an installation token posts as: a workflow's GITHUB_TOKEN, or a GitHub App's ``<slug>[bot]``
    bot: str = ACTIONS_BOT
    #: comments by (repo, pr), in creation order
    comments: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    #: pull requests by (repo, number)
    pulls: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    #: when set, every write answers this HTTP status (e.g. 403 for a read-only token)
    fail_writes_with: int | None = None
    _next_id: int = 1000

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def author(self) -> str:
        """Who the comments this token writes are by."""
        return self.login or self.bot

    def __enter__(self) -> FakeGitHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def add_pull(self, repo: str, number: int, head_sha: str, *, base_sha: str = "0" * 40) -> None:
        with self._lock:
            self.pulls[(repo, number)] = {
                "number": number,
                "state": "open",
                "head": {"sha": head_sha, "ref": "feature", "repo": {"full_name": repo}},
                "base": {"sha": base_sha, "ref": "main", "repo": {"full_name": repo}},
                "html_url": f"https://github.example/{repo}/pull/{number}",
            }

    def push(self, repo: str, number: int, head_sha: str) -> None:
        """A new commit on the pull request's branch: its head moves."""
        with self._lock:
            self.pulls[(repo, number)]["head"]["sha"] = head_sha

    def add_comment(self, repo: str, pr: int, body: str, user: str = "someone") -> int:
        with self._lock:
            self._next_id += 1
            comment = {
                "id": self._next_id,
                "body": body,
                "user": user_object(user),
                "html_url": f"https://github.example/{repo}/pull/{pr}#issuecomment-{self._next_id}",
            }
            self.comments.setdefault((repo, pr), []).append(comment)
            return self._next_id

    def bodies(self, repo: str, pr: int) -> list[str]:
        return [c["body"] for c in self.comments.get((repo, pr), [])]

    def by(self, repo: str, pr: int) -> list[tuple[str, str]]:
        """(author, body) of every comment on the pull request."""
        return [(c["user"]["login"], c["body"]) for c in self.comments.get((repo, pr), [])]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

            def _authorized(self) -> bool:
                fake.requests.append((self.command, self.path))
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self._send(401, {"message": "Bad credentials"})
                    return False
                return True

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                parts = urlsplit(self.path)
                if parts.path == "/user":
                    if fake.login is None:
                        self._send(403, NOT_FOR_INTEGRATIONS)
                    else:
                        self._send(200, user_object(fake.login))
                    return
                pull = PULL.match(parts.path)
                if pull:
                    with fake._lock:
                        found = fake.pulls.get((pull["repo"], int(pull["pr"])))
                        data = json.loads(json.dumps(found)) if found else None
                    if data is None:
                        self._send(404, {"message": "Not Found"})
                    else:
                        self._send(200, data)
                    return
                match = LIST.match(parts.path)
                if not match:
                    self._send(404, {"message": "Not Found"})
                    return
                query = parse_qs(parts.query)
                per_page = int(query.get("per_page", ["30"])[0])
                page = int(query.get("page", ["1"])[0])
                with fake._lock:
                    items = list(fake.comments.get((match["repo"], int(match["pr"])), []))
                chunk = items[(page - 1) * per_page : page * per_page]
                headers = {}
                if page * per_page < len(items):
                    base = f"{fake.url}{parts.path}?per_page={per_page}"
                    headers["Link"] = f'<{base}&page={page + 1}>; rel="next", <{base}&page=1>; rel="first"'
                self._send(200, chunk, headers)

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                match = LIST.match(urlsplit(self.path).path)
                if not match:
                    self._send(404, {"message": "Not Found"})
                    return
                if fake.fail_writes_with:
                    self._send(fake.fail_writes_with, {"message": "Resource not accessible by integration"})
                    return
                body = self._body()["body"]
                new_id = fake.add_comment(match["repo"], int(match["pr"]), body, user=fake.author)
                self._send(201, self._find(new_id))

            def do_PATCH(self) -> None:
                if not self._authorized():
                    return
                match = ONE.match(urlsplit(self.path).path)
                comment = self._find(int(match["id"])) if match else None
                if comment is None:
                    self._send(404, {"message": "Not Found"})
                    return
                if fake.fail_writes_with:
                    self._send(fake.fail_writes_with, {"message": "Resource not accessible by integration"})
                    return
                with fake._lock:
                    comment["body"] = self._body()["body"]
                self._send(200, comment)

            def _find(self, comment_id: int) -> dict[str, Any] | None:
                with fake._lock:
                    for items in fake.comments.values():
                        for comment in items:
                            if comment["id"] == comment_id:
                                return comment
                return None

        return Handler
