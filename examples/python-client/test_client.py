"""Tests of the Python client against a running auth-service / task-service pair.

AUTH_ADDR and TASK_ADDR name the two services (host:port); without them every test is
skipped. Run after `python generate.py`:

    AUTH_ADDR=127.0.0.1:50051 TASK_ADDR=127.0.0.1:50052 python -m unittest -v test_client
"""

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import unittest
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from stubs import auth_pb2, auth_pb2_grpc, task_pb2, task_pb2_grpc
from todo_client import field_violations, request_id

HERE = Path(__file__).resolve().parent
AUTH_ADDR = os.environ.get("AUTH_ADDR", "")
TASK_ADDR = os.environ.get("TASK_ADDR", "")
TIMEOUT = 10.0
Code = grpc.StatusCode

# Connected in setUpModule: one channel per service and their stubs.
channels: list[grpc.Channel] = []
auth = tasks = None


def wait_until_serving(address: str, within: float = 30.0) -> None:
    """Poll grpc.health.v1.Health/Check for the whole server until it answers SERVING.

    No health stubs needed: the request {service: ""} encodes to no bytes at all, and the
    response {status: SERVING} is field 1 = 1, which encodes to the two bytes 08 01.
    """
    give_up = time.monotonic() + within
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")  # bytes in, bytes out
        while True:
            try:
                answer = check(b"", timeout=2.0)
                if answer == b"\x08\x01":
                    return
                problem = f"health status bytes {answer.hex()}"
            except grpc.RpcError as error:
                problem = f"{error.code().name}: {error.details()}"
            if time.monotonic() > give_up:
                raise RuntimeError(f"{address} is not SERVING after {within:g} s ({problem})")
            time.sleep(0.2)


def setUpModule() -> None:
    global auth, tasks
    if not (AUTH_ADDR and TASK_ADDR):
        raise unittest.SkipTest("set AUTH_ADDR and TASK_ADDR (host:port) of a running pair")
    wait_until_serving(AUTH_ADDR)
    wait_until_serving(TASK_ADDR)
    channels.extend([grpc.insecure_channel(AUTH_ADDR), grpc.insecure_channel(TASK_ADDR)])
    auth = auth_pb2_grpc.AuthServiceStub(channels[0])
    tasks = task_pb2_grpc.TaskServiceStub(channels[1])


def tearDownModule() -> None:
    for channel in channels:
        channel.close()


def new_email() -> str:
    return f"py-test-{secrets.token_hex(8)}@example.com"


def bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


def sign_up_and_log_in() -> tuple[auth_pb2.User, tuple]:
    """A fresh user and the metadata that authenticates as them."""
    email, password = new_email(), secrets.token_urlsafe(16)
    auth.SignUp(auth_pb2.SignUpRequest(email=email, password=password), timeout=TIMEOUT)
    login = auth.Login(auth_pb2.LoginRequest(email=email, password=password), timeout=TIMEOUT)
    return login.user, bearer(login.access_token)


def whole_seconds_from_now(delta: timedelta) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(timezone.utc).replace(microsecond=0) + delta)
    return stamp


class ApiTest(unittest.TestCase):
    """Behaviour of the services, seen through the generated stubs."""

    def assertFails(self, code: Code, method, request, metadata=None) -> grpc.RpcError:
        with self.assertRaises(grpc.RpcError) as caught:
            method(request, timeout=TIMEOUT, metadata=metadata)
        error = caught.exception
        self.assertEqual(error.code(), code, f"{error.code().name}: {error.details()}")
        return error

    def test_sign_up_returns_the_user_with_the_normalised_email(self):
        email = new_email()
        user = auth.SignUp(auth_pb2.SignUpRequest(email=f"  {email.upper()} ", password="long enough"),
                           timeout=TIMEOUT).user
        self.assertEqual(user.email, email)
        uuid.UUID(user.id)
        self.assertTrue(user.HasField("create_time"))

    def test_errors_carry_the_request_id_the_caller_sent(self):
        _, me = sign_up_and_log_in()
        error = self.assertFails(Code.INVALID_ARGUMENT, tasks.GetTask, task_pb2.GetTaskRequest(id="not-a-uuid"),
                                 metadata=me + (("x-request-id", "py-report-42"),))
        self.assertEqual(request_id(error), "py-report-42")
        self.assertEqual([field for field, _ in field_violations(error)], ["id"])
        fresh = self.assertFails(Code.UNAUTHENTICATED, tasks.ListTasks, task_pb2.ListTasksRequest())
        uuid.UUID(request_id(fresh))  # none sent: the server made one

    def test_duplicate_sign_up_is_already_exists(self):
        email = new_email()
        auth.SignUp(auth_pb2.SignUpRequest(email=email, password="long enough"), timeout=TIMEOUT)
        self.assertFails(Code.ALREADY_EXISTS, auth.SignUp,
                         auth_pb2.SignUpRequest(email=email.upper(), password="another one"))

    def test_invalid_sign_up_names_each_bad_field(self):
        error = self.assertFails(Code.INVALID_ARGUMENT, auth.SignUp,
                                 auth_pb2.SignUpRequest(email="not-an-email", password="short"))
        violations = field_violations(error)
        self.assertEqual(sorted(field for field, _ in violations), ["email", "password"])
        self.assertTrue(all(description for _, description in violations))

    def test_wrong_password_is_unauthenticated(self):
        email = new_email()
        auth.SignUp(auth_pb2.SignUpRequest(email=email, password="long enough"), timeout=TIMEOUT)
        self.assertFails(Code.UNAUTHENTICATED, auth.Login,
                         auth_pb2.LoginRequest(email=email, password="not the password"))

    def test_current_user_is_the_token_owner(self):
        user, metadata = sign_up_and_log_in()
        me = auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), timeout=TIMEOUT, metadata=metadata)
        self.assertEqual((me.user.id, me.user.email), (user.id, user.email))

    def test_task_calls_without_a_valid_token_are_unauthenticated(self):
        some_id = str(uuid.uuid4())
        calls = [
            (tasks.CreateTask, task_pb2.CreateTaskRequest(title="x")),
            (tasks.GetTask, task_pb2.GetTaskRequest(id=some_id)),
            (tasks.ListTasks, task_pb2.ListTasksRequest()),
            (tasks.UpdateTask, task_pb2.UpdateTaskRequest(id=some_id, completed=True)),
            (tasks.DeleteTask, task_pb2.DeleteTaskRequest(id=some_id)),
        ]
        for metadata in (None, bearer("not.a.jwt"), (("authorization", "Basic dXNlcjpwYXNz"),)):
            for method, request in calls:
                with self.subTest(rpc=type(request).__name__, metadata=metadata):
                    self.assertFails(Code.UNAUTHENTICATED, method, request, metadata)
        self.assertFails(Code.UNAUTHENTICATED, auth.GetCurrentUser, auth_pb2.GetCurrentUserRequest())

    def test_another_users_task_is_not_found(self):
        _, owner = sign_up_and_log_in()
        _, stranger = sign_up_and_log_in()
        task = tasks.CreateTask(task_pb2.CreateTaskRequest(title="Private"),
                                timeout=TIMEOUT, metadata=owner).task
        unknown = self.assertFails(Code.NOT_FOUND, tasks.GetTask,
                                   task_pb2.GetTaskRequest(id=str(uuid.uuid4())), stranger)
        for method, request in [
            (tasks.GetTask, task_pb2.GetTaskRequest(id=task.id)),
            (tasks.UpdateTask, task_pb2.UpdateTaskRequest(id=task.id, title="Mine now")),
            (tasks.DeleteTask, task_pb2.DeleteTaskRequest(id=task.id)),
        ]:
            with self.subTest(rpc=type(request).__name__):
                error = self.assertFails(Code.NOT_FOUND, method, request, stranger)
                self.assertEqual(error.details(), unknown.details())  # leaks nothing
        listed = tasks.ListTasks(task_pb2.ListTasksRequest(), timeout=TIMEOUT, metadata=stranger)
        self.assertEqual(list(listed.tasks), [])
        kept = tasks.GetTask(task_pb2.GetTaskRequest(id=task.id), timeout=TIMEOUT, metadata=owner)
        self.assertEqual(kept.task, task)

    def test_stale_etag_is_aborted_and_changes_nothing(self):
        _, me = sign_up_and_log_in()
        task = tasks.CreateTask(task_pb2.CreateTaskRequest(title="Versioned"),
                                timeout=TIMEOUT, metadata=me).task
        updated = tasks.UpdateTask(task_pb2.UpdateTaskRequest(id=task.id, title="Second", etag=task.etag),
                                   timeout=TIMEOUT, metadata=me).task
        self.assertNotEqual(updated.etag, task.etag)
        self.assertFails(Code.ABORTED, tasks.UpdateTask,
                         task_pb2.UpdateTaskRequest(id=task.id, title="Stale", etag=task.etag), me)
        self.assertFails(Code.ABORTED, tasks.DeleteTask,
                         task_pb2.DeleteTaskRequest(id=task.id, etag=task.etag), me)
        current = tasks.GetTask(task_pb2.GetTaskRequest(id=task.id), timeout=TIMEOUT, metadata=me).task
        self.assertEqual(current, updated)

    def test_crud_round_trip(self):
        _, me = sign_up_and_log_in()
        due = whole_seconds_from_now(timedelta(days=2))
        created = tasks.CreateTask(
            task_pb2.CreateTaskRequest(title="  Write the report ", description="Quarterly", due_time=due),
            timeout=TIMEOUT, metadata=me).task
        self.assertEqual(uuid.UUID(created.id).version, 7)
        self.assertEqual((created.title, created.description, created.completed),
                         ("Write the report", "Quarterly", False))
        self.assertEqual(created.due_time, due)
        self.assertTrue(created.HasField("create_time"))
        self.assertEqual(created.update_time, created.create_time)
        self.assertTrue(created.etag)

        fetched = tasks.GetTask(task_pb2.GetTaskRequest(id=created.id), timeout=TIMEOUT, metadata=me)
        self.assertEqual(fetched.task, created)

        newer = tasks.CreateTask(task_pb2.CreateTaskRequest(title="Second"),
                                 timeout=TIMEOUT, metadata=me).task
        self.assertFalse(newer.HasField("due_time"))
        page = tasks.ListTasks(task_pb2.ListTasksRequest(page_size=10), timeout=TIMEOUT, metadata=me)
        self.assertEqual([t.id for t in page.tasks], [newer.id, created.id])  # newest first
        self.assertEqual(page.next_page_token, "")

        done = tasks.UpdateTask(
            task_pb2.UpdateTaskRequest(id=created.id, completed=True, etag=created.etag),
            timeout=TIMEOUT, metadata=me).task
        self.assertTrue(done.completed)
        self.assertEqual((done.title, done.description, done.due_time),
                         (created.title, created.description, created.due_time))
        self.assertNotEqual(done.etag, created.etag)
        self.assertEqual(done.create_time, created.create_time)
        self.assertGreaterEqual(done.update_time.ToDatetime(), created.update_time.ToDatetime())

        completed = tasks.ListTasks(task_pb2.ListTasksRequest(completed=True),
                                    timeout=TIMEOUT, metadata=me)
        self.assertEqual([t.id for t in completed.tasks], [created.id])

        tasks.DeleteTask(task_pb2.DeleteTaskRequest(id=created.id, etag=done.etag),
                         timeout=TIMEOUT, metadata=me)
        self.assertFails(Code.NOT_FOUND, tasks.GetTask, task_pb2.GetTaskRequest(id=created.id), me)
        self.assertFails(Code.NOT_FOUND, tasks.DeleteTask, task_pb2.DeleteTaskRequest(id=created.id), me)
        page = tasks.ListTasks(task_pb2.ListTasksRequest(), timeout=TIMEOUT, metadata=me)
        self.assertEqual([t.id for t in page.tasks], [newer.id])


class SessionTest(unittest.TestCase):
    """Refresh and Logout through the generated stubs."""

    def log_in(self):
        email, password = new_email(), secrets.token_urlsafe(16)
        auth.SignUp(auth_pb2.SignUpRequest(email=email, password=password), timeout=TIMEOUT)
        return auth.Login(auth_pb2.LoginRequest(email=email, password=password), timeout=TIMEOUT)

    def test_refresh_rotates_the_refresh_token_and_keeps_the_session(self):
        login = self.log_in()
        fresh = auth.Refresh(auth_pb2.RefreshRequest(refresh_token=login.refresh_token), timeout=TIMEOUT)
        self.assertNotEqual(fresh.refresh_token, login.refresh_token)
        self.assertEqual(fresh.token_type, "bearer")
        me = auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), timeout=TIMEOUT,
                                 metadata=bearer(fresh.access_token))
        self.assertEqual(me.user.id, login.user.id)
        with self.assertRaises(grpc.RpcError) as caught:
            auth.Refresh(auth_pb2.RefreshRequest(refresh_token="not-a-token"), timeout=TIMEOUT)
        self.assertEqual(caught.exception.code(), Code.UNAUTHENTICATED)

    def test_logout_ends_the_session_at_both_services(self):
        login = self.log_in()
        out = auth.Logout(auth_pb2.LogoutRequest(scope=auth_pb2.LOGOUT_SCOPE_CURRENT), timeout=TIMEOUT,
                          metadata=bearer(login.access_token))
        self.assertEqual(out.revoked_sessions, 1)
        give_up = time.monotonic() + 1.0
        while True:  # task-service learns of it within a second
            try:
                tasks.ListTasks(task_pb2.ListTasksRequest(), timeout=TIMEOUT, metadata=bearer(login.access_token))
            except grpc.RpcError as error:
                self.assertEqual(error.code(), Code.UNAUTHENTICATED)
                break
            self.assertLess(time.monotonic(), give_up, "task-service still accepts the token")
            time.sleep(0.02)
        with self.assertRaises(grpc.RpcError) as caught:
            auth.Refresh(auth_pb2.RefreshRequest(refresh_token=login.refresh_token), timeout=TIMEOUT)
        self.assertEqual(caught.exception.code(), Code.UNAUTHENTICATED)


class WatchTest(unittest.TestCase):
    """TaskService.WatchTasks through the stubs: the list, live changes, resuming."""

    Event = task_pb2.WatchTasksResponse

    def create(self, metadata, title: str) -> task_pb2.Task:
        return tasks.CreateTask(task_pb2.CreateTaskRequest(title=title), timeout=TIMEOUT, metadata=metadata).task

    def read(self, stream, n: int) -> list:
        """The next `n` events that are not bookmarks."""
        events = []
        for event in stream:
            self.assertTrue(event.resume_token, "every event carries a resume token")
            if event.type != self.Event.EVENT_TYPE_BOOKMARK:
                events.append(event)
            if len(events) == n:
                return events
        self.fail(f"the stream ended after {len(events)} of {n} events")

    def test_the_list_then_current_then_live_changes(self):
        _, me = sign_up_and_log_in()
        first, second = self.create(me, "first"), self.create(me, "second")
        stream = tasks.WatchTasks(task_pb2.WatchTasksRequest(), timeout=TIMEOUT, metadata=me)
        try:
            initial = self.read(stream, 3)
            self.assertEqual([e.type for e in initial], [self.Event.EVENT_TYPE_UPSERTED] * 2 + [self.Event.EVENT_TYPE_CURRENT])
            self.assertEqual({e.task.id for e in initial[:2]}, {first.id, second.id})
            self.assertEqual({e.task_id for e in initial[:2]}, {first.id, second.id})
            third = self.create(me, "third")
            tasks.DeleteTask(task_pb2.DeleteTaskRequest(id=first.id), timeout=TIMEOUT, metadata=me)
            added, deleted = self.read(stream, 2)
            self.assertEqual((added.type, added.task.title, added.task.etag), (self.Event.EVENT_TYPE_UPSERTED, "third", third.etag))
            self.assertEqual((deleted.type, deleted.task_id), (self.Event.EVENT_TYPE_DELETED, first.id))
            self.assertFalse(deleted.HasField("task"))
        finally:
            stream.cancel()

    def test_resuming_replays_exactly_the_changes_after_the_token(self):
        _, me = sign_up_and_log_in()
        task = self.create(me, "before")
        stream = tasks.WatchTasks(task_pb2.WatchTasksRequest(), timeout=TIMEOUT, metadata=me)
        token = self.read(stream, 2)[-1].resume_token  # CURRENT
        stream.cancel()
        done = tasks.UpdateTask(task_pb2.UpdateTaskRequest(id=task.id, completed=True, etag=task.etag),
                                timeout=TIMEOUT, metadata=me).task
        later = self.create(me, "after")
        resumed = tasks.WatchTasks(task_pb2.WatchTasksRequest(resume_token=token), timeout=TIMEOUT, metadata=me)
        try:
            changed, added = self.read(resumed, 2)
            self.assertEqual((changed.task.id, changed.task.completed, changed.task.etag), (task.id, True, done.etag))
            self.assertEqual(added.task.id, later.id)
            # From the middle: only what came after.
            again = tasks.WatchTasks(task_pb2.WatchTasksRequest(resume_token=changed.resume_token),
                                     timeout=TIMEOUT, metadata=me)
            try:
                self.assertEqual([e.task.id for e in self.read(again, 1)], [later.id])
            finally:
                again.cancel()
        finally:
            resumed.cancel()

    def test_another_users_or_a_malformed_token_is_invalid_argument(self):
        _, alice = sign_up_and_log_in()
        _, bob = sign_up_and_log_in()
        stream = tasks.WatchTasks(task_pb2.WatchTasksRequest(), timeout=TIMEOUT, metadata=alice)
        alices_token = self.read(stream, 1)[0].resume_token
        stream.cancel()
        for token in (alices_token, "not-a-token"):
            with self.assertRaises(grpc.RpcError) as caught:
                next(iter(tasks.WatchTasks(task_pb2.WatchTasksRequest(resume_token=token), timeout=TIMEOUT, metadata=bob)))
            self.assertEqual(caught.exception.code(), Code.INVALID_ARGUMENT, caught.exception.details())


class ProgramTest(unittest.TestCase):
    """todo_client.py, run as a user would run it."""

    def run_client(self, *args: str, auth_addr: str = AUTH_ADDR) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(HERE / "todo_client.py"), "--auth", auth_addr, "--tasks", TASK_ADDR, *args],
            capture_output=True, text=True, timeout=120, cwd=HERE,
        )

    def assertLines(self, output: str, patterns: list[str]) -> None:
        """Each pattern matches a whole line, in this order."""
        lines = iter(output.splitlines())
        for pattern in patterns:
            self.assertTrue(any(re.fullmatch(pattern, line) for line in lines),
                            f"no line matching {pattern!r} (in order) in:\n{output}")

    def test_walk_through(self):
        result = self.run_client()
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertLines(result.stdout, [
            r"signed up py-client-[0-9a-f]{12}@example\.com \(user id [0-9a-f-]{36}\)",
            r"logged in: bearer token, expires in \d+ s, session [0-9a-f-]{36}",
            r"current user: py-client-[0-9a-f]{12}@example\.com \(user id [0-9a-f-]{36}, since .* UTC\)",
            r'created task [0-9a-f-]{36} "Try the Python client", due \S+ \(etag .+\)',
            r"listed 1 task\(s\)",
            r"  \[ \] [0-9a-f-]{36} Try the Python client",
            r"completed task [0-9a-f-]{36} \(etag .+ -> .+\)",
            r"deleted task [0-9a-f-]{36}",
            r"refreshed: new access token, expires in \d+ s; refresh token rotated",
            r"logged out: 1 session\(s\) ended",
            r"done",
        ])

    def test_existing_account_logs_in(self):
        # `--password=...`: a random password may begin with "-", which argparse would take
        # for an option if it came as an argument of its own.
        credentials = ["--email", new_email(), f"--password={secrets.token_urlsafe(16)}"]
        first = self.run_client(*credentials)
        self.assertEqual(first.returncode, 0, first.stdout + first.stderr)
        again = self.run_client(*credentials)
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)
        self.assertLines(again.stdout, [
            r"py-test-\S+ has an account already: logging in",
            r"logged in: bearer token, expires in \d+ s, session [0-9a-f-]{36}",
            r"done",
        ])

    def test_demo_errors(self):
        result = self.run_client("--demo-errors")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertLines(result.stdout, [
            r"SignUp failed: INVALID_ARGUMENT: .+",
            r"  field email: .+",
            r"  field password: .+",
            r"signed up .+",
            r"completed task .+",
            r"UpdateTask failed: ABORTED: .+",
            r"deleted task .+",
            r"GetTask failed: NOT_FOUND: .+",
            r"done",
        ])

    def test_watch_prints_the_list_then_each_change(self):
        email, password = new_email(), secrets.token_urlsafe(16)
        auth.SignUp(auth_pb2.SignUpRequest(email=email, password=password), timeout=TIMEOUT)
        login = auth.Login(auth_pb2.LoginRequest(email=email, password=password), timeout=TIMEOUT)
        me = bearer(login.access_token)
        existing = tasks.CreateTask(task_pb2.CreateTaskRequest(title="Already there"), timeout=TIMEOUT, metadata=me).task
        watcher = subprocess.Popen(
            [sys.executable, "-u", str(HERE / "todo_client.py"), "watch", "--auth", AUTH_ADDR, "--tasks", TASK_ADDR,
             "--email", email, f"--password={password}", "--events", "3", "--duration", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE,
        )
        try:
            lines = []
            for line in watcher.stdout:  # up to the end of the initial list
                lines.append(line.rstrip("\n"))
                if line.startswith("up to date:"):
                    break
            added = tasks.CreateTask(task_pb2.CreateTaskRequest(title="Added elsewhere"), timeout=TIMEOUT, metadata=me).task
            tasks.UpdateTask(task_pb2.UpdateTaskRequest(id=added.id, completed=True), timeout=TIMEOUT, metadata=me)
            tasks.DeleteTask(task_pb2.DeleteTaskRequest(id=existing.id), timeout=TIMEOUT, metadata=me)
            rest, errors = watcher.communicate(timeout=60)
        finally:
            watcher.kill()
        output = "\n".join(lines) + "\n" + rest
        self.assertEqual(watcher.returncode, 0, output + errors)
        self.assertLines(output, [
            r".+ has an account already: logging in",
            rf"  \[ \] {existing.id} Already there",
            r"up to date: 1 task\(s\); watching for changes",
            rf"added \[ \] {added.id} Added elsewhere",
            rf"changed \[x\] {added.id} Added elsewhere",
            rf"deleted {existing.id}",
            r"done",
        ])

    def test_wrong_password_exits_non_zero(self):
        email = new_email()
        auth.SignUp(auth_pb2.SignUpRequest(email=email, password="long enough"), timeout=TIMEOUT)
        result = self.run_client("--email", email, "--password", "wrong password")
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("Login failed: UNAUTHENTICATED", result.stderr)

    def test_unreachable_service_exits_non_zero(self):
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        result = self.run_client("--timeout", "2", auth_addr=f"127.0.0.1:{port}")
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("SignUp failed: UNAVAILABLE", result.stderr)
        self.assertIn("retry with back-off", result.stderr)


if __name__ == "__main__":
    unittest.main()
