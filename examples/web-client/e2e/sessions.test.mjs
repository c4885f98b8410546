// Browser test of sessions: Refresh across tabs, the signed-in devices list with "Revoke",
// "Sign out everywhere", password change and account deletion; a device whose session ends
// elsewhere is signed out without a reload (its live stream is ended). Two browser contexts are two
// devices; two pages of one context are two tabs of one browser.
//
//   AUTH_URL=http://127.0.0.1:50051 TASK_URL=http://127.0.0.1:50052 node --test e2e/
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { AUTH_URL, PASSWORD, TASK_URL, appUrl, eventually, expectCount, expectText, fillAuth, launch, logIn, signUp, textOf } from "./helpers.mjs";

const stored = (page) => page.evaluate(() => JSON.parse(localStorage.getItem("todo-grpc.session")));

async function expectSignedOut(page, pattern, what) {
  await page.getByLabel("Email", { exact: true }).waitFor({ state: "visible" });
  await expectText(page.getByTestId("notice"), pattern, what);
  assert.equal(await page.locator("#tasks-view").isHidden(), true, `${what}: task view hidden`);
}

test("sessions in the browser", { timeout: 180_000 }, async (t) => {
  assert.ok(AUTH_URL && TASK_URL, "set AUTH_URL and TASK_URL");
  const url = await appUrl(t, "10");
  const { problems, newContext } = await launch(t);
  const laptop = await newContext();
  const phone = await newContext();
  const a = await laptop.newPage();
  const step = (name) => console.log(`step: ${name}`);

  try {
    const email = `web-sessions-${randomUUID()}@example.com`;
    step("sign up, and sign in on two devices");
    await a.goto(url);
    await signUp(a, email, PASSWORD);
    await expectText(a.getByTestId("notice"), /Account created/, "sign-up");
    await logIn(a, email, PASSWORD);
    const b = await phone.newPage();
    await b.goto(url);
    await logIn(b, email, PASSWORD);

    step("two tabs renew an expired token with one Refresh between them");
    const a2 = await laptop.newPage();
    await a2.goto(url);
    await a2.getByTestId("empty-state").waitFor({ state: "visible" });
    // Both tabs leave the app before the stored token is spoiled: an open page of the app
    // could, by chance, reconnect its live stream with the spoiled token and refresh on its
    // own, or leave a Refresh in flight as it unloads. The app's stylesheet is a page of the
    // same origin (the same storage) that runs none of the app's script.
    const plain = new URL("styles.css", url).href;
    await Promise.all([a.goto(plain), a2.goto(plain)]);
    const refreshes = [];
    for (const tab of [a, a2]) {
      tab.on("request", (r) => r.url().endsWith("/todo.auth.v1.AuthService/Refresh") && refreshes.push(r.url()));
    }
    const before = await stored(a);
    await a.evaluate(() => {
      const s = JSON.parse(localStorage.getItem("todo-grpc.session"));
      localStorage.setItem("todo-grpc.session", JSON.stringify({ ...s, accessToken: "expired-token" }));
    });
    await Promise.all([a.goto(url), a2.goto(url)]);
    for (const tab of [a, a2]) await tab.getByTestId("empty-state").waitFor({ state: "visible" });
    const after = await eventually("renewed", () => stored(a), (s) => s.accessToken !== "expired-token");
    assert.equal(refreshes.length, 1, `one Refresh for both tabs, saw ${refreshes.length}`);
    assert.notEqual(after.refreshToken, before.refreshToken, "rotated");
    await a2.close();

    step("the devices list, and revoking the phone");
    await a.getByRole("button", { name: "Account" }).click();
    await expectCount(a.getByTestId("session-item"), 2, "two signed-in devices");
    assert.deepEqual(await a.getByTestId("session-name").allTextContents().then((n) => n.includes("This device")), true);
    await a.locator('[data-testid="session-item"][data-current="false"]').getByRole("button", { name: /Sign out/ }).click();
    await expectText(a.getByTestId("notice"), /^That device is signed out\.$/, "revoked");
    await expectCount(a.getByTestId("session-item"), 1, "one device left");
    // No reload: the phone's live stream ends with UNAUTHENTICATED, and Refresh is refused too.
    await expectSignedOut(b, /^Your session expired, please log in again\.$/, "the phone is signed out");

    step("change password: a wrong one, then the right one");
    await a.getByLabel("Current password").fill("not my password");
    await a.getByLabel("New password").fill("a brand new passphrase");
    await a.getByRole("button", { name: "Change password" }).click();
    await expectText(a.getByTestId("password-form-error"), /^The password is wrong\.$/, "wrong current password");
    assert.equal(await a.locator("#tasks-view").isHidden(), false, "a wrong password does not sign out");
    await a.getByLabel("Current password").fill(PASSWORD);
    await a.getByLabel("New password").fill("password");
    await a.getByRole("button", { name: "Change password" }).click();
    await expectText(a.getByTestId("new-password-error"), /^new_password: is one of the 10,000 most common/, "weak new password");
    await b.goto(url);
    await logIn(b, email, PASSWORD);
    await a.getByLabel("Current password").fill(PASSWORD);
    await a.getByLabel("New password").fill("a brand new passphrase");
    await a.getByRole("button", { name: "Change password" }).click();
    await expectText(a.getByTestId("notice"), /^Password changed\. 1 other device was signed out\.$/, "changed");
    await expectSignedOut(b, /session expired/, "the phone is signed out by the change");

    step("sign out everywhere");
    await fillAuth(b, email, "a brand new passphrase");
    await b.getByRole("button", { name: "Log in" }).click();
    await b.getByTestId("empty-state").waitFor({ state: "visible" });
    await a.getByRole("button", { name: "Sign out everywhere" }).click();
    await expectSignedOut(a, /^You are signed out on every device\.$/, "signed out here");
    await expectSignedOut(b, /session expired/, "and on the phone");

    step("delete the account");
    await logIn(a, email, "a brand new passphrase");
    await a.getByRole("button", { name: "Account" }).click();
    await a.getByLabel("Password to confirm").fill("wrong password");
    await a.getByRole("button", { name: "Delete account" }).click();
    await expectText(a.getByTestId("delete-form-error"), /^The password is wrong\.$/, "wrong password");
    await a.getByLabel("Password to confirm").fill("a brand new passphrase");
    await a.getByRole("button", { name: "Delete account" }).click();
    await expectSignedOut(a, /^Your account and all its tasks were deleted\.$/, "deleted");
    await fillAuth(a, email, "a brand new passphrase");
    await a.getByRole("button", { name: "Log in" }).click();
    await expectText(a.getByTestId("auth-error"), /Wrong email or password/, "the account is gone");
  } catch (err) {
    console.log(`notice at failure: ${JSON.stringify(await textOf(a.getByTestId("notice")).catch(() => null))}`);
    if (problems.length > 0) console.log(`page problems so far:\n${problems.join("\n")}`);
    throw err;
  }
  assert.deepEqual(problems, [], "the pages logged errors");
});
