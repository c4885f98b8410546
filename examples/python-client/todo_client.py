#!/usr/bin/env python3
"""A walk through the todo-grpc API with the generated Python stubs, and a live task watcher.

`walk` (the default) signs up (or logs in, if the account already exists), shows the current
user, creates a task, lists the tasks, completes the task with a conditional update (its
etag), deletes it, refreshes the session (the refresh token rotates) and logs out. A call
refused as UNAUTHENTICATED is retried once after a Refresh, as a long-running client would.
Errors are handled by gRPC status code; validation errors show the google.rpc.BadRequest field
violations carried in the rich status.

`watch` signs in the same way, prints the tasks, then every change made to them anywhere
(TaskService.WatchTasks) until stopped, resuming where it left off when the stream breaks.

    python generate.py          # once: writes the stubs into ./generated
    python todo_client.py --auth 127.0.0.1:50051 --tasks 127.0.0.1:50052 [--demo-errors]
    python todo_client.py watch --email ada@example.com --password '...' [--events N] [--duration S]
"""

import argparse
import random
import secrets
import sys
import time
from datetime import datetime, timedelta, timezone

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from stubs import auth_pb2, auth_pb2_grpc, task_pb2, task_pb2_grpc

Code = grpc.StatusCode

# UNAVAILABLE and RESOURCE_EXHAUSTED are transient: retry them a few times with back-off
# (or after the server's RetryInfo delay) before giving up.
RETRYABLE = {Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED}
ATTEMPTS = 4
BACKOFF_SECONDS = 0.25
# A watch reconnects without giving up; its delay grows to this, with jitter.
WATCH_MAX_BACKOFF_SECONDS = 30.0


class RpcFailure(Exception):
    """A call that failed, with the name of its RPC."""

    def __init__(self, rpc: str, error: grpc.RpcError):
        super().__init__(f"{rpc} failed: {error.code().name}: {error.details()}")
        self.rpc = rpc
        self.error = error
        self.code = error.code()


def status_details(error: grpc.RpcError) -> list:
    """The details of the rich status (trailer grpc-status-details-bin) that we understand."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # a details trailer that contradicts the call's code or message
        return []
    if status is None:
        return []
    details = []
    for packed in status.details:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.RetryInfo, error_details_pb2.RequestInfo):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                details.append(detail)
    return details


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) of every google.rpc.BadRequest field violation."""
    return [
        (violation.field, violation.description)
        for detail in status_details(error)
        if isinstance(detail, error_details_pb2.BadRequest)
        for violation in detail.field_violations
    ]


def retry_delay(error: grpc.RpcError) -> float | None:
    """The delay the server asks for in a google.rpc.RetryInfo, in seconds, if any."""
    for detail in status_details(error):
        if isinstance(detail, error_details_pb2.RetryInfo) and detail.HasField("retry_delay"):
            return detail.retry_delay.ToTimedelta().total_seconds()
    return None


def request_id(error: grpc.RpcError) -> str | None:
    """The call's request id from its google.rpc.RequestInfo: it finds the call in the server's logs."""
    for detail in status_details(error):
        if isinstance(detail, error_details_pb2.RequestInfo) and detail.request_id:
            return detail.request_id
    return None


def report(failure: RpcFailure, file=sys.stdout) -> None:
    """Print what went wrong, in terms of what the caller can do about it."""
    print(failure, file=file)
    code, error = failure.code, failure.error
    if code == Code.INVALID_ARGUMENT:
        for field, description in field_violations(error):
            print(f"  field {field}: {description}", file=file)
    elif code == Code.UNAUTHENTICATED:
        print("  not authenticated: wrong email or password, or the token is missing,"
              " invalid or expired (log in again)", file=file)
    elif code == Code.ALREADY_EXISTS:
        print("  an account with this email exists already: log in instead", file=file)
    elif code == Code.NOT_FOUND:
        print("  no task of yours has this id (it may have been deleted)", file=file)
    elif code == Code.ABORTED:
        print("  the task changed since its etag was read and nothing was changed:"
              " read it again and retry", file=file)
    elif code in RETRYABLE:
        delay = retry_delay(error)
        what = ("the service is busy" if code == Code.RESOURCE_EXHAUSTED else
                "the service is unreachable, starting, or cannot reach its database")
        when = f"retry after {delay:g} s (RetryInfo)" if delay is not None else "retry with back-off"
        print(f"  {what}: {when}", file=file)
    elif code == Code.DEADLINE_EXCEEDED:
        print("  no answer within the deadline", file=file)
    if code in (Code.INTERNAL, Code.UNKNOWN, Code.DATA_LOSS, Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED):
        reference = request_id(error)
        if reference:
            print(f"  request id {reference}: quote it when reporting this", file=file)


class Api:
    """Stubs for both services, one channel each, with a deadline on every call."""

    def __init__(self, auth_channel: grpc.Channel, task_channel: grpc.Channel, timeout: float):
        self.auth = auth_pb2_grpc.AuthServiceStub(auth_channel)
        self.tasks = task_pb2_grpc.TaskServiceStub(task_channel)
        self.timeout = timeout
        self.token: str | None = None
        self.refresh_token: str | None = None

    def log_in(self, email: str, password: str):
        login = self.call(self.auth.Login, auth_pb2.LoginRequest(email=email, password=password))
        self.token, self.refresh_token = login.access_token, login.refresh_token
        return login

    def refresh(self):
        """A new access token for the session. The refresh token rotates: keep only the new one."""
        fresh = self.call(self.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=self.refresh_token),
                          renew=False)
        self.token, self.refresh_token = fresh.access_token, fresh.refresh_token
        return fresh

    def log_out(self, scope=auth_pb2.LOGOUT_SCOPE_CURRENT):
        ended = self.call(self.auth.Logout, auth_pb2.LogoutRequest(scope=scope), renew=False)
        self.token = self.refresh_token = None
        return ended

    def call(self, method, request, *, retry: bool = True, renew: bool = True):
        """Call `method` with a deadline and, once logged in, the bearer token.

        Transient failures are retried; pass retry=False for calls that are not safe to
        repeat (CreateTask: a lost response after the server committed would duplicate it).
        UpdateTask and DeleteTask are sent with the task's etag, so a repeat is harmless.
        An UNAUTHENTICATED answer (an expired access token) is retried once after a Refresh.
        """
        try:
            return self._call(method, request, retry)
        except RpcFailure as failure:
            if not (renew and self.refresh_token and failure.code == Code.UNAUTHENTICATED):
                raise
            self.refresh()
            return self._call(method, request, retry)

    def metadata(self):
        return (("authorization", f"Bearer {self.token}"),) if self.token else None

    def _call(self, method, request, retry: bool):
        rpc = type(request).__name__.removesuffix("Request")
        metadata = self.metadata()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return method(request, timeout=self.timeout, metadata=metadata)
            except grpc.RpcError as error:
                if not retry or attempt == ATTEMPTS or error.code() not in RETRYABLE:
                    raise RpcFailure(rpc, error) from None
                delay = retry_delay(error) or BACKOFF_SECONDS * 2 ** (attempt - 1)
                print(f"{rpc}: {error.code().name}, retrying in {delay:g} s")
                time.sleep(delay)


def expect_failure(code: Code, attempt) -> None:
    """Demonstrate an error: run `attempt`, which must fail with `code`, and report it."""
    try:
        attempt()
    except RpcFailure as failure:
        report(failure)
        if failure.code != code:
            raise
    else:
        raise RuntimeError(f"expected {code.name}, but the call succeeded")


def sign_in(api: Api, email: str, password: str):
    """Sign up, or log in if the account exists already."""
    try:
        user = api.call(api.auth.SignUp, auth_pb2.SignUpRequest(email=email, password=password)).user
        print(f"signed up {user.email} (user id {user.id})")
    except RpcFailure as failure:
        if failure.code != Code.ALREADY_EXISTS:
            raise
        print(f"{email} has an account already: logging in")

    login = api.log_in(email, password)
    print(f"logged in: {login.token_type} token, expires in {login.expires_in} s, session {login.session_id}")
    return login


def walk_through(api: Api, email: str, password: str, demo_errors: bool) -> None:
    auth, tasks = auth_pb2, task_pb2

    if demo_errors:
        print("demo: signing up with an invalid email and a too short password")
        expect_failure(Code.INVALID_ARGUMENT, lambda: api.call(
            api.auth.SignUp, auth.SignUpRequest(email="not-an-email", password="short")))

    sign_in(api, email, password)

    me = api.call(api.auth.GetCurrentUser, auth.GetCurrentUserRequest()).user
    since = me.create_time.ToDatetime(tzinfo=timezone.utc)
    print(f"current user: {me.email} (user id {me.id}, since {since:%Y-%m-%d %H:%M:%S} UTC)")

    due = Timestamp()
    due.FromDatetime(datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1))
    task = api.call(api.tasks.CreateTask, tasks.CreateTaskRequest(
        title="Try the Python client", description="Created by todo_client.py", due_time=due,
    ), retry=False).task
    print(f'created task {task.id} "{task.title}", due {due.ToJsonString()} (etag {task.etag})')

    page = api.call(api.tasks.ListTasks, tasks.ListTasksRequest(page_size=10))
    more = ", more on the next page" if page.next_page_token else ""
    print(f"listed {len(page.tasks)} task(s){more}")
    for item in page.tasks:
        print(f"  [{'x' if item.completed else ' '}] {item.id} {item.title}")

    # Only the fields present change; the etag makes the change conditional.
    done = api.call(api.tasks.UpdateTask, tasks.UpdateTaskRequest(
        id=task.id, completed=True, etag=task.etag)).task
    print(f"completed task {done.id} (etag {task.etag} -> {done.etag})")

    if demo_errors:
        print("demo: updating the task with its old etag")
        expect_failure(Code.ABORTED, lambda: api.call(api.tasks.UpdateTask, tasks.UpdateTaskRequest(
            id=task.id, title="Stale change", etag=task.etag)))

    api.call(api.tasks.DeleteTask, tasks.DeleteTaskRequest(id=done.id, etag=done.etag))
    print(f"deleted task {done.id}")

    if demo_errors:
        print("demo: reading the deleted task")
        expect_failure(Code.NOT_FOUND, lambda: api.call(
            api.tasks.GetTask, tasks.GetTaskRequest(id=done.id)))

    old_refresh_token = api.refresh_token
    fresh = api.refresh()
    rotated = "rotated" if fresh.refresh_token != old_refresh_token else "NOT rotated"
    print(f"refreshed: new access token, expires in {fresh.expires_in} s; refresh token {rotated}")

    ended = api.log_out()
    print(f"logged out: {ended.revoked_sessions} session(s) ended")


def task_line(task) -> str:
    return f"[{'x' if task.completed else ' '}] {task.id} {task.title}"


def watch(api: Api, events: int | None, duration: float | None) -> None:
    """Print the caller's tasks, then every change to them, until `events` changes were
    printed or `duration` seconds passed (or forever).

    The stream is resumed from the last event's resume_token whenever it breaks: UNAVAILABLE
    (a restart, the stream's maximum age, the network), RESOURCE_EXHAUSTED (too many streams,
    read too slowly). FAILED_PRECONDITION means the token is older than the server's retention:
    start again from the whole list. UNAUTHENTICATED: the access token expired (renewed with a
    Refresh, then resumed) or the session ended (the watch ends).
    """
    EventType = task_pb2.WatchTasksResponse
    give_up = None if duration is None else time.monotonic() + duration
    resume_token = ""
    known: dict[str, object] = {}  # task id -> task, to tell a new task from a changed one
    printed = failures = 0
    renewed_in_vain = False
    while True:
        left = None if give_up is None else give_up - time.monotonic()
        if left is not None and left <= 0:
            return
        # Until CURRENT the events are the initial list; their tokens are not kept, since
        # resuming from one would skip the part of the list not received yet.
        initial: dict[str, object] | None = {} if not resume_token else None
        stream = api.tasks.WatchTasks(task_pb2.WatchTasksRequest(resume_token=resume_token),
                                      metadata=api.metadata(), timeout=left)
        try:
            for event in stream:
                failures, renewed_in_vain = 0, False
                if event.type == EventType.EVENT_TYPE_UPSERTED:
                    if initial is not None:
                        initial[event.task.id] = event.task
                    else:
                        print(f"{'changed' if event.task.id in known else 'added'} {task_line(event.task)}")
                        known[event.task.id] = event.task
                        printed += 1
                elif event.type == EventType.EVENT_TYPE_DELETED:
                    if initial is not None:
                        initial.pop(event.task_id, None)
                    else:
                        print(f"deleted {event.task_id}")
                        known.pop(event.task_id, None)
                        printed += 1
                elif event.type == EventType.EVENT_TYPE_CURRENT and initial is not None:
                    known = initial
                    initial = None
                    for task in known.values():
                        print(f"  {task_line(task)}")
                    print(f"up to date: {len(known)} task(s); watching for changes")
                # EVENT_TYPE_BOOKMARK: nothing happened; only its resume_token is news.
                if initial is None:
                    resume_token = event.resume_token
                sys.stdout.flush()
                if events is not None and printed >= events:
                    stream.cancel()
                    return
            continue  # ended without a status (servers end streams with one): resume
        except grpc.RpcError as error:
            code = error.code()
            if code == Code.DEADLINE_EXCEEDED and give_up is not None and time.monotonic() >= give_up - 0.1:
                return
            if code == Code.UNAUTHENTICATED:
                if renewed_in_vain or not api.refresh_token:
                    raise RpcFailure("WatchTasks", error) from None
                try:
                    api.refresh()
                except RpcFailure:
                    raise RpcFailure("WatchTasks", error) from None
                print("access token renewed: resuming")
                renewed_in_vain = True
                continue
            if code in (Code.FAILED_PRECONDITION, Code.INVALID_ARGUMENT) and resume_token:
                print(f"cannot resume ({code.name}: {error.details()}): starting over")
                resume_token = ""
                continue
            if code not in RETRYABLE:
                raise RpcFailure("WatchTasks", error) from None
            failures += 1
            step = min(WATCH_MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2 ** (failures - 1))
            delay = retry_delay(error) or step / 2 + random.random() * step / 2
            print(f"stream ended ({code.name}: {error.details()}): resuming in {delay:.1f} s")
            sys.stdout.flush()
            time.sleep(delay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=("walk", "watch"), default="walk",
                        help="walk: the walk-through (default); watch: print every change to"
                             " the account's tasks until stopped")
    parser.add_argument("--auth", default="127.0.0.1:50051", metavar="HOST:PORT",
                        help="auth-service address (default: %(default)s)")
    parser.add_argument("--tasks", default="127.0.0.1:50052", metavar="HOST:PORT",
                        help="task-service address (default: %(default)s)")
    parser.add_argument("--ca-file", metavar="PEM",
                        help="connect over TLS, checking the services' certificates against this"
                             " CA (default: plaintext, as the services listen by default)")
    parser.add_argument("--email", help="account email (default: a fresh random one)")
    parser.add_argument("--password", help="account password (default: a fresh random one)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="deadline of each call (default: %(default)s)")
    parser.add_argument("--demo-errors", action="store_true",
                        help="also trigger and print INVALID_ARGUMENT, ABORTED and NOT_FOUND")
    parser.add_argument("--events", type=int, metavar="N",
                        help="watch: stop after N changes (default: never)")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="watch: stop after this long (default: never)")
    args = parser.parse_args(argv)

    email = args.email or f"py-client-{secrets.token_hex(6)}@example.com"
    password = args.password or secrets.token_urlsafe(24)

    def connect(address: str) -> grpc.Channel:
        if args.ca_file is None:
            return grpc.insecure_channel(address)
        # The services' TLS (TLS_CERT_FILE): the certificate must name the host in `address`.
        # For a publicly trusted certificate, ssl_channel_credentials() with no roots.
        with open(args.ca_file, "rb") as ca:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
        return grpc.secure_channel(address, credentials)

    with connect(args.auth) as auth_channel, connect(args.tasks) as task_channel:
        api = Api(auth_channel, task_channel, args.timeout)
        try:
            if args.command == "watch":
                sign_in(api, email, password)
                watch(api, args.events, args.duration)
            else:
                walk_through(api, email, password, args.demo_errors)
        except RpcFailure as failure:
            report(failure, file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
