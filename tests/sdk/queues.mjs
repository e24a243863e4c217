// Queues through the SDK package named by KILN_SDK_PACKAGE (4.x): list,
// retrieve, pause and resume. A paused queue's run waits; resumed, it
// completes. Prints "ok <step>"; any failed assertion exits non-zero.
import assert from "node:assert/strict";

const sdkPackage = process.env.KILN_SDK_PACKAGE ?? "@trigger.dev/sdk";
const { configure, queues, runs, tasks } = await import(`${sdkPackage}/v3`);
configure({ baseURL: process.env.TRIGGER_API_URL, accessToken: process.env.TRIGGER_SECRET_KEY });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const queue = { type: "custom", name: "sdk-paused" };

async function until(what, check) {
  for (let tries = 0; tries < 300; tries++) {
    const value = await check();
    if (value) return value;
    await sleep(100);
  }
  assert.fail(`${what}: not within 30 s`);
}

const first = await tasks.trigger("kiln.noop", { n: 1 }, { queue: queue.name });
await until("the first run completes", async () => (await runs.retrieve(first.id)).status === "COMPLETED");

const paused = await queues.pause(queue);
assert.equal(paused.name, "sdk-paused");
assert.equal(paused.type, "custom");
assert.equal(paused.paused, true);
console.log("ok pause");

const waiting = await tasks.trigger("kiln.noop", { n: 2 }, { queue: queue.name });
// A worker takes the run and parks it within this time; a started run
// would have completed.
await sleep(2000);
assert.notEqual((await runs.retrieve(waiting.id)).status, "COMPLETED");
const held = await queues.retrieve(queue);
assert.equal(held.paused, true);
assert.equal(held.queued, 1);
const byId = await queues.retrieve(held.id);
assert.equal(byId.name, "sdk-paused");
console.log("ok paused queue holds its run");

const listed = [];
for await (const item of queues.list()) listed.push(item);
assert.ok(listed.some((item) => item.name === "sdk-paused" && item.paused), "the paused queue is listed");
const taskQueue = await queues.retrieve({ type: "task", name: "kiln.noop" });
assert.equal(taskQueue.name, "task/kiln.noop");
assert.equal(taskQueue.type, "task");
console.log("ok list and retrieve");

const resumed = await queues.resume(queue);
assert.equal(resumed.paused, false);
await until("the held run completes", async () => (await runs.retrieve(waiting.id)).status === "COMPLETED");
console.log("ok resume");
