// Browser test of live sync: two devices signed in as the same user see each other's changes
// without a reload, over gRPC-web (TaskService.WatchTasks); the stream resumes after the server
// ends it; another user's changes never show up.
//
//   AUTH_URL=http://127.0.0.1:50051 TASK_URL=http://127.0.0.1:50052 node --test e2e/live.test.mjs
//
// The pair under test should end streams early (TASK_WATCH_MAX_AGE=12, as tests/clients/run
// sets it), or the resume step waits for the default maximum age.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { AUTH_URL, PASSWORD, TASK_URL, addTask, appUrl, eventually, expectCompleted, expectText, expectTitles, item, launch, logIn, signUp, textOf } from "./helpers.mjs";

const WATCH_PATH = "/todo.task.v1.TaskService/WatchTasks";
/** How long the resume step waits for the server to end a stream (its maximum age and then some). */
const RESUME_WAIT_MS = Number(process.env.WATCH_RESUME_WAIT_MS ?? 40_000);

async function expectLive(page, what) {
  await eventually(`${what}: live`, () => page.getByTestId("live-status").getAttribute("data-state"), (s) => s === "live");
}

/** The WatchTasks calls a page makes, with whether each carried a resume token. */
function watchCalls(page) {
  const calls = [];
  page.on("request", (r) => {
    if (!r.url().endsWith(WATCH_PATH)) return;
    // gRPC-web binary: a 5-byte frame header, then the WatchTasksRequest; an empty message
    // (no resume token) is the header alone.
    const body = r.postDataBuffer() ?? Buffer.alloc(0);
    calls.push({ contentType: r.headers()["content-type"], resumes: body.length > 5 });
  });
  return calls;
}

test("live sync between two devices", { timeout: 180_000 }, async (t) => {
  assert.ok(AUTH_URL && TASK_URL, "set AUTH_URL and TASK_URL");
  const url = await appUrl(t, "10");
  const { problems, newContext } = await launch(t);
  const laptop = await (await newContext()).newPage();
  const phone = await (await newContext()).newPage();
  const step = (name) => console.log(`step: ${name}`);

  try {
    const email = `web-live-${randomUUID()}@example.com`;
    step("sign up, and sign in on two devices");
    await laptop.goto(url);
    await signUp(laptop, email, PASSWORD);
    await expectText(laptop.getByTestId("notice"), /Account created/, "sign-up");
    await logIn(laptop, email, PASSWORD);
    const phoneWatches = watchCalls(phone);
    await phone.goto(url);
    await logIn(phone, email, PASSWORD);
    await expectLive(laptop, "laptop");
    await expectLive(phone, "phone");
    assert.match(phoneWatches[0]?.contentType ?? "", /^application\/grpc-web/, "the stream is gRPC-web");
    assert.equal(phoneWatches[0].resumes, false, "the first stream starts from the whole list");

    step("a task added on the laptop shows up on the phone");
    await addTask(laptop, "Buy milk", "Two litres");
    await expectTitles(phone, ["Buy milk"], "phone sees the new task");
    await expectText(item(phone, "Buy milk").getByTestId("task-description"), /^Two litres$/, "with its description");

    step("completed and renamed on the phone, seen on the laptop");
    await item(phone, "Buy milk").getByRole("checkbox").check();
    await expectCompleted(laptop, "Buy milk", true);
    await item(phone, "Buy milk").getByRole("button", { name: "Edit" }).click();
    await phone.getByTestId("edit-title").fill("Buy oat milk");
    await phone.getByRole("button", { name: "Save" }).click();
    await expectTitles(laptop, ["Buy oat milk"], "laptop sees the new title");

    step("newest first on both, and a delete goes everywhere");
    await addTask(laptop, "Call mum");
    await expectTitles(phone, ["Call mum", "Buy oat milk"], "phone: newest first");
    await item(laptop, "Buy oat milk").getByRole("button", { name: "Delete" }).click();
    await expectTitles(phone, ["Call mum"], "phone: deleted on the laptop");

    step("another user's changes never show up");
    const otherContext = await newContext();
    const other = await otherContext.newPage();
    await other.goto(url);
    const otherEmail = `web-live-other-${randomUUID()}@example.com`;
    await signUp(other, otherEmail, PASSWORD);
    await expectText(other.getByTestId("notice"), /Account created/, "sign-up of the other user");
    await logIn(other, otherEmail, PASSWORD);
    await addTask(other, "Not yours");
    await addTask(laptop, "Marker");
    await expectTitles(phone, ["Marker", "Call mum"], "phone: the marker, and nothing of the other user");
    await otherContext.close();

    step("the server ends the stream (maximum age): the phone resumes and misses nothing");
    await eventually("a resumed stream", () => phoneWatches.filter((c) => c.resumes).length, (n) => n >= 1, RESUME_WAIT_MS);
    await addTask(laptop, "After the resume");
    await expectTitles(phone, ["After the resume", "Marker", "Call mum"], "phone sees a change made after the resume");
    await expectLive(phone, "phone after the resume");
    assert.equal(phoneWatches.filter((c) => !c.resumes).length, 1, "the phone never had to start over");
  } catch (err) {
    for (const [name, page] of [["laptop", laptop], ["phone", phone]]) {
      console.log(`${name} notice at failure: ${JSON.stringify(await textOf(page.getByTestId("notice")).catch(() => null))}`);
    }
    if (problems.length > 0) console.log(`page problems so far:\n${problems.join("\n")}`);
    throw err;
  }
  assert.deepEqual(problems, [], "the pages logged errors");
});
