// What the browser tests share: the static server, Chromium, waiting and the app's common steps.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const AUTH_URL = process.env.AUTH_URL;
export const TASK_URL = process.env.TASK_URL;
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const SCREENSHOT_DIR = resolve(process.env.SCREENSHOT_DIR ?? resolve(root, "../../target/client-tests"));
export const TIMEOUT_MS = 15_000;
export const PASSWORD = "correct horse battery staple";

/** Starts scripts/serve.mjs on a free port and resolves with its base URL. */
export function startServer() {
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
export async function eventually(what, read, accept, timeoutMs = TIMEOUT_MS) {
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

export const textOf = async (locator) => ((await locator.count()) > 0 ? ((await locator.first().textContent()) ?? "").trim() : null);

export async function expectText(locator, pattern, what) {
  await eventually(what, () => textOf(locator), (t) => t !== null && pattern.test(t));
}

export async function expectCount(locator, n, what) {
  await eventually(what, () => locator.count(), (c) => c === n);
}

export async function titles(page) {
  return page.getByTestId("task-title").allTextContents();
}

export async function expectTitles(page, expected, what) {
  await eventually(what, () => titles(page), (t) => JSON.stringify(t) === JSON.stringify(expected));
}

/** The list item of the task with this exact title. */
export function item(page, title) {
  return page
    .getByTestId("task-item")
    .filter({ has: page.getByTestId("task-title").filter({ hasText: new RegExp(`^${escapeRe(title)}$`) }) });
}

export const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

export async function fillAuth(page, email, password) {
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
}

export async function signUp(page, email, password) {
  await fillAuth(page, email, password);
  await page.getByRole("button", { name: "Sign up" }).click();
}

export async function logIn(page, email, password) {
  await fillAuth(page, email, password);
  await page.getByRole("button", { name: "Log in" }).click();
  await expectText(page.getByTestId("current-user"), new RegExp(`^${escapeRe(email)}$`), `logged in as ${email}`);
}

export async function addTask(page, title, description = "") {
  const before = await page.getByTestId("task-item").count();
  await page.getByTestId("new-title").fill(title);
  await page.getByTestId("new-description").fill(description);
  await page.getByRole("button", { name: "Add task" }).click();
  await expectCount(page.getByTestId("task-item"), before + 1, `task "${title}" added`);
}

export async function expectCompleted(page, title, completed) {
  const it = item(page, title);
  await eventually(
    `"${title}" completed=${completed}`,
    async () => ((await it.count()) === 1 ? await it.getAttribute("data-completed") : null),
    (v) => v === String(completed),
  );
  assert.equal(await it.getByTestId("task-toggle").isChecked(), completed, `checkbox of "${title}"`);
}


/** Chromium with one context; every page error or console error is collected into `problems`. */
export async function launch(t) {
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
  const problems = [];
  const newContext = async () => {
    const context = await browser.newContext({ viewport: { width: 900, height: 900 } });
    context.setDefaultTimeout(TIMEOUT_MS);
    context.on("page", (p) => {
      p.on("pageerror", (err) => problems.push(`page error: ${err.stack ?? err}`));
      p.on("console", (msg) => {
        if (msg.type() !== "error") return;
        if (/favicon\.ico/.test(msg.location().url ?? "") || /favicon\.ico/.test(msg.text())) return;
        problems.push(`console error: ${msg.text()} (${msg.location().url})`);
      });
    });
    return context;
  };
  return { browser, problems, newContext };
}

/** The app's URL on the static server, pointed at the pair. */
export async function appUrl(t, pageSize = "1") {
  const server = startServer();
  t.after(() => server.child.kill());
  const base = await server.url;
  const query = new URLSearchParams({ auth: AUTH_URL, tasks: TASK_URL, pageSize });
  return `${base}?${query}`;
}
