// Browser test of the web client against a running auth-service + task-service pair.
//
//   AUTH_URL=http://127.0.0.1:50051 TASK_URL=http://127.0.0.1:50052 node --test e2e/
//
// Needs `npm run build` first (it serves dist/) and Debian's chromium at /usr/bin/chromium
// (override with CHROMIUM_PATH). Saves a screenshot to $SCREENSHOT_DIR/web-client.png
// (default: ../../target/client-tests, i.e. the repository's target/client-tests).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { resolve } from "node:path";
import { test } from "node:test";
import {
  AUTH_URL,
  PASSWORD,
  SCREENSHOT_DIR,
  TASK_URL,
  addTask,
  appUrl as startApp,
  escapeRe,
  eventually,
  expectCompleted,
  expectText,
  expectTitles,
  fillAuth,
  item,
  launch,
  logIn,
  signUp,
  textOf,
} from "./helpers.mjs";

test("web client against the live pair", { timeout: 180_000 }, async (t) => {
  assert.ok(AUTH_URL, "set AUTH_URL, e.g. http://127.0.0.1:50051");
  assert.ok(TASK_URL, "set TASK_URL, e.g. http://127.0.0.1:50052");
  await mkdir(SCREENSHOT_DIR, { recursive: true });

  const appUrl = await startApp(t);
  const { problems: pageProblems, newContext } = await launch(t);
  const context = await newContext();
  const page = await context.newPage();
  const step = (name) => console.log(`step: ${name}`);

  try {
    step("open the app");
    await page.goto(appUrl);
    await page.getByLabel("Email", { exact: true }).waitFor();
    await expectText(page.getByTestId("auth-url"), new RegExp(`^${escapeRe(new URL(AUTH_URL).href.replace(/\/$/, ""))}$`), "auth URL from the query string");

    step("sign-up errors: field violations from the server");
    await signUp(page, "not-an-email", "short");
    await expectText(page.getByTestId("password-error"), /^password: must be at least 8 characters/, "password violation");
    await expectText(page.getByTestId("email-error"), /^email: .*valid email/, "email violation");
    assert.equal(await page.getByLabel("Password", { exact: true }).getAttribute("aria-invalid"), "true");

    step("sign up user A");
    const emailA = `web-a-${randomUUID()}@example.com`;
    await signUp(page, emailA, PASSWORD);
    await expectText(page.getByTestId("notice"), /Account created for .*You can log in now/, "sign-up confirmation");
    assert.equal(await page.getByTestId("password-error").isHidden(), true, "old field errors are cleared");

    step("same email again: already exists");
    await signUp(page, emailA.toUpperCase(), PASSWORD);
    await expectText(page.getByTestId("auth-error"), /already exists/, "already-exists message");

    step("wrong password");
    await fillAuth(page, emailA, "not the password");
    await page.getByRole("button", { name: "Log in" }).click();
    await expectText(page.getByTestId("auth-error"), /Wrong email or password/, "wrong-credentials message");

    step("log in user A");
    await logIn(page, emailA, PASSWORD);
    await page.getByTestId("empty-state").waitFor({ state: "visible" });

    step("add two tasks (and an invalid one)");
    await page.getByRole("button", { name: "Add task" }).click();
    await expectText(page.getByTestId("new-title-error"), /^title: is required/, "title violation");
    await addTask(page, "Buy milk", "Two litres, semi-skimmed");
    await addTask(page, "Write report");
    await expectTitles(page, ["Write report", "Buy milk"], "newest first");

    step("reload: the session and the tasks come back, one page at a time");
    await page.reload();
    await expectText(page.getByTestId("current-user"), new RegExp(`^${escapeRe(emailA)}$`), "session kept");
    await expectTitles(page, ["Write report"], "first page (pageSize=1)");
    await page.getByRole("button", { name: "Load more" }).click();
    await expectTitles(page, ["Write report", "Buy milk"], "second page appended");
    await page.getByTestId("load-more").waitFor({ state: "hidden" });

    step("complete a task");
    await item(page, "Buy milk").getByRole("checkbox").check();
    await expectCompleted(page, "Buy milk", true);

    step("stale etag: an edit open here while another tab saves a change is refused, and the list reloads");
    const other = await context.newPage(); // same localStorage: same session
    await other.goto(appUrl);
    await expectTitles(other, ["Write report"], "other tab first page");
    await item(page, "Write report").getByRole("button", { name: "Edit" }).click();
    await item(other, "Write report").getByRole("button", { name: "Edit" }).click();
    await other.getByTestId("edit-title").fill("Write the report");
    await other.getByRole("button", { name: "Save" }).click();
    await expectTitles(other, ["Write the report"], "edited in the other tab");
    await other.close();
    // The open form is left alone by the live change; saving it would overwrite that change.
    assert.equal(await page.getByTestId("edit-title").inputValue(), "Write report", "the form keeps what was opened");
    await page.getByTestId("edit-title").fill("Write a report");
    await page.getByRole("button", { name: "Save" }).click();
    await expectText(page.getByTestId("notice"), /changed elsewhere/, "ABORTED message");
    await expectTitles(page, ["Write the report"], "list reloaded after ABORTED");

    step("delete a task");
    await item(page, "Write the report").getByRole("button", { name: "Delete" }).click();
    await expectText(page.getByTestId("notice"), /Deleted “Write the report”/, "delete confirmation");
    // The only shown task went away: the next page is loaded on its own.
    await expectTitles(page, ["Buy milk"], "next page shown after the delete");

    step("reopen and complete again");
    await item(page, "Buy milk").getByRole("checkbox").uncheck();
    await expectCompleted(page, "Buy milk", false);
    await item(page, "Buy milk").getByRole("checkbox").check();
    await expectCompleted(page, "Buy milk", true);

    step("reload: one task, completed");
    await page.reload();
    await expectTitles(page, ["Buy milk"], "one task after reload");
    await expectCompleted(page, "Buy milk", true);
    await expectText(item(page, "Buy milk").getByTestId("task-description"), /^Two litres, semi-skimmed$/, "description kept");
    await page.getByTestId("load-more").waitFor({ state: "hidden" });
    await page.screenshot({ path: resolve(SCREENSHOT_DIR, "web-client.png"), fullPage: true });

    step("sign out");
    await page.getByRole("button", { name: "Sign out", exact: true }).click();
    await page.getByLabel("Email", { exact: true }).waitFor({ state: "visible" });
    await expectText(page.getByTestId("notice"), /^You are signed out\.$/, "signed-out message");
    assert.equal(await page.getByTestId("task-item").count(), 0, "no tasks left on screen");
    assert.equal(await page.evaluate(() => localStorage.getItem("todo-grpc.session")), null, "token forgotten");

    step("user B sees no tasks");
    const emailB = `web-b-${randomUUID()}@example.com`;
    await signUp(page, emailB, PASSWORD);
    await expectText(page.getByTestId("notice"), /Account created/, "sign-up B");
    await logIn(page, emailB, PASSWORD);
    await page.getByTestId("empty-state").waitFor({ state: "visible" });
    assert.equal(await page.getByTestId("task-item").count(), 0, "user B has no tasks");

    step("an access token the server refuses is renewed with the refresh token, once");
    const before = await page.evaluate(() => JSON.parse(localStorage.getItem("todo-grpc.session")));
    await page.evaluate(() => {
      const s = JSON.parse(localStorage.getItem("todo-grpc.session"));
      localStorage.setItem("todo-grpc.session", JSON.stringify({ ...s, accessToken: "not-a-valid-token" }));
    });
    await page.reload();
    await page.getByTestId("empty-state").waitFor({ state: "visible" });
    const after = await eventually(
      "renewed tokens stored",
      () => page.evaluate(() => JSON.parse(localStorage.getItem("todo-grpc.session"))),
      (s) => s.accessToken !== "not-a-valid-token",
    );
    assert.notEqual(after.refreshToken, before.refreshToken, "the refresh token rotated");
    assert.equal(after.sessionId, before.sessionId, "same session");
    assert.equal(await page.locator("#tasks-view").isHidden(), false, "still signed in");

    step("a session the server refuses sends the person back to log in");
    await page.evaluate(() => {
      const s = JSON.parse(localStorage.getItem("todo-grpc.session"));
      localStorage.setItem("todo-grpc.session", JSON.stringify({ ...s, accessToken: "not-a-valid-token", refreshToken: "not-a-refresh-token" }));
    });
    await page.reload();
    await expectText(page.getByTestId("notice"), /^Your session expired, please log in again\.$/, "session-expired message");
    await page.getByLabel("Password", { exact: true }).waitFor({ state: "visible" });
    assert.equal(await page.locator("#tasks-view").isHidden(), true, "task view hidden");
  } catch (err) {
    console.log(`notice at failure: ${JSON.stringify(await textOf(page.getByTestId("notice")).catch(() => null))}`);
    if (pageProblems.length > 0) console.log(`page problems so far:\n${pageProblems.join("\n")}`);
    await page
      .screenshot({ path: resolve(SCREENSHOT_DIR, "web-client-failure.png"), fullPage: true })
      .then(() => console.log(`failure screenshot: ${resolve(SCREENSHOT_DIR, "web-client-failure.png")}`))
      .catch(() => {});
    throw err;
  }

  assert.deepEqual(pageProblems, [], "the page logged errors");
  console.log(`screenshot: ${resolve(SCREENSHOT_DIR, "web-client.png")}`);
});
