// Browser test of the web client against a running auth-service + task-service pair.
//
//   AUTH_URL=http://127.0.0.1:50051 TASK_URL=http://127.0.0.1:50052 node --test e2e/
//
// Needs `npm run build` first (it serves dist/) and Debian's chromium at /usr/bin/chromium
// (override with CHROMIUM_PATH). Saves a screenshot to $SCREENSHOT_DIR/web-client.png
// (default: ../../target/client-tests, i.e. the repository's target/client-tests).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const AUTH_URL = process.env.AUTH_URL;
const TASK_URL = process.env.TASK_URL;
const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SCREENSHOT_DIR = resolve(process.env.SCREENSHOT_DIR ?? resolve(root, "../../target/client-tests"));
const TIMEOUT_MS = 15_000;
const PASSWORD = "correct horse battery staple";

/** Starts scripts/serve.mjs on a free port and resolves with its base URL. */
function startServer() {
  const child = spawn(process.execPath, ["scripts/serve.mjs"], {
    cwd: root,
    env: { ...process.env, PORT: "0" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = new Promise((resolveUrl, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`static server printed no URL: ${out}`)), 10_000);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/(http:\/\/127\.0\.0\.1:\d+\/)/);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`static server exited with ${code}: ${out}`));
    });
  });
  return { child, url };
}

/** Polls `read` until `accept` holds, else fails with the last value seen. */
async function eventually(what, read, accept, timeoutMs = TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await read();
    if (accept(last)) return last;
    if (Date.now() > deadline) {
      assert.fail(`timed out waiting for ${what}; last value: ${JSON.stringify(last)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const textOf = async (locator) => ((await locator.count()) > 0 ? ((await locator.first().textContent()) ?? "").trim() : null);

async function expectText(locator, pattern, what) {
  await eventually(what, () => textOf(locator), (t) => t !== null && pattern.test(t));
}

async function expectCount(locator, n, what) {
  await eventually(what, () => locator.count(), (c) => c === n);
}

async function titles(page) {
  return page.getByTestId("task-title").allTextContents();
}

async function expectTitles(page, expected, what) {
  await eventually(what, () => titles(page), (t) => JSON.stringify(t) === JSON.stringify(expected));
}

/** The list item of the task with this exact title. */
function item(page, title) {
  return page
    .getByTestId("task-item")
    .filter({ has: page.getByTestId("task-title").filter({ hasText: new RegExp(`^${escapeRe(title)}$`) }) });
}

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

async function fillAuth(page, email, password) {
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
}

async function signUp(page, email, password) {
  await fillAuth(page, email, password);
  await page.getByRole("button", { name: "Sign up" }).click();
}

async function logIn(page, email, password) {
  await fillAuth(page, email, password);
  await page.getByRole("button", { name: "Log in" }).click();
  await expectText(page.getByTestId("current-user"), new RegExp(`^${escapeRe(email)}$`), `logged in as ${email}`);
}

async function addTask(page, title, description = "") {
  const before = await page.getByTestId("task-item").count();
  await page.getByTestId("new-title").fill(title);
  await page.getByTestId("new-description").fill(description);
  await page.getByRole("button", { name: "Add task" }).click();
  await expectCount(page.getByTestId("task-item"), before + 1, `task "${title}" added`);
}

async function expectCompleted(page, title, completed) {
  const it = item(page, title);
  await eventually(
    `"${title}" completed=${completed}`,
    async () => ((await it.count()) === 1 ? await it.getAttribute("data-completed") : null),
    (v) => v === String(completed),
  );
  assert.equal(await it.getByTestId("task-toggle").isChecked(), completed, `checkbox of "${title}"`);
}

test("web client against the live pair", { timeout: 180_000 }, async (t) => {
  assert.ok(AUTH_URL, "set AUTH_URL, e.g. http://127.0.0.1:50051");
  assert.ok(TASK_URL, "set TASK_URL, e.g. http://127.0.0.1:50052");
  await mkdir(SCREENSHOT_DIR, { recursive: true });

  const server = startServer();
  t.after(() => server.child.kill());
  const base = await server.url;

  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  t.after(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 900, height: 900 } });
  context.setDefaultTimeout(TIMEOUT_MS);

  // Any uncaught exception or console error in any page fails the test.
  const pageProblems = [];
  const watch = (p) => {
    p.on("pageerror", (err) => pageProblems.push(`page error: ${err.stack ?? err}`));
    p.on("console", (msg) => {
      if (msg.type() !== "error") return;
      if (/favicon\.ico/.test(msg.location().url ?? "") || /favicon\.ico/.test(msg.text())) return;
      pageProblems.push(`console error: ${msg.text()} (${msg.location().url})`);
    });
  };
  context.on("page", watch);

  const page = await context.newPage();
  const query = new URLSearchParams({ auth: AUTH_URL, tasks: TASK_URL, pageSize: "1" });
  const appUrl = `${base}?${query}`;
  const step = (name) => console.log(`step: ${name}`);

  try {
    step("open the app");
    await page.goto(appUrl);
    await page.getByLabel("Email").waitFor();
    await expectText(page.getByTestId("auth-url"), new RegExp(`^${escapeRe(new URL(AUTH_URL).href.replace(/\/$/, ""))}$`), "auth URL from the query string");

    step("sign-up errors: field violations from the server");
    await signUp(page, "not-an-email", "short");
    await expectText(page.getByTestId("password-error"), /^password: must be at least 8 characters/, "password violation");
    await expectText(page.getByTestId("email-error"), /^email: .*valid email/, "email violation");
    assert.equal(await page.getByLabel("Password").getAttribute("aria-invalid"), "true");

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

    step("stale etag: a change made in another tab wins, this tab is told and reloads");
    const other = await context.newPage(); // same localStorage: same session
    await other.goto(appUrl);
    await expectTitles(other, ["Write report"], "other tab first page");
    await item(other, "Write report").getByRole("button", { name: "Edit" }).click();
    await other.getByTestId("edit-title").fill("Write the report");
    await other.getByRole("button", { name: "Save" }).click();
    await expectTitles(other, ["Write the report"], "edited in the other tab");
    await other.close();
    await item(page, "Write report").getByRole("button", { name: "Delete" }).click();
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

    step("log out");
    await page.getByRole("button", { name: "Log out" }).click();
    await page.getByLabel("Email").waitFor({ state: "visible" });
    await expectText(page.getByTestId("notice"), /logged out/, "logged-out message");
    assert.equal(await page.getByTestId("task-item").count(), 0, "no tasks left on screen");
    assert.equal(await page.evaluate(() => localStorage.getItem("todo-grpc.session")), null, "token forgotten");

    step("user B sees no tasks");
    const emailB = `web-b-${randomUUID()}@example.com`;
    await signUp(page, emailB, PASSWORD);
    await expectText(page.getByTestId("notice"), /Account created/, "sign-up B");
    await logIn(page, emailB, PASSWORD);
    await page.getByTestId("empty-state").waitFor({ state: "visible" });
    assert.equal(await page.getByTestId("task-item").count(), 0, "user B has no tasks");

    step("a token the server refuses sends the person back to log in");
    await page.evaluate(() => {
      const s = JSON.parse(localStorage.getItem("todo-grpc.session"));
      localStorage.setItem("todo-grpc.session", JSON.stringify({ ...s, accessToken: "not-a-valid-token" }));
    });
    await page.reload();
    await expectText(page.getByTestId("notice"), /^Your session expired, please log in again\.$/, "session-expired message");
    await page.getByLabel("Password").waitFor({ state: "visible" });
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
