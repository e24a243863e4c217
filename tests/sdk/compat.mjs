// Drives kiln with the official @trigger.dev/sdk, exactly as an app would:
// only TRIGGER_API_URL and TRIGGER_SECRET_KEY point it at kiln. Each step
// prints "ok <step>"; any failed assertion exits non-zero.
import assert from "node:assert/strict";
// KILN_SDK_PACKAGE picks the SDK generation (see package.json's aliases).
const sdkPackage = process.env.KILN_SDK_PACKAGE ?? "@trigger.dev/sdk";
const { auth, configure, envvars, runs, schedules, tasks } = await import(`${sdkPackage}/v3`);

configure({ baseURL: process.env.TRIGGER_API_URL, accessToken: process.env.TRIGGER_SECRET_KEY });

// Every URL the SDK fetches, to see which protocol it spoke.
const fetched = [];
const realFetch = globalThis.fetch;
globalThis.fetch = (input, init) => {
  fetched.push(`${init?.method ?? "GET"} ${typeof input === "string" ? input : input.url}`);
  return realFetch(input, init);
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(runId, done, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const run = await runs.retrieve(runId);
    if (done(run)) return run;
    if (Date.now() > deadline) throw new Error(`run ${runId} stuck in ${run.status}`);
    await sleep(50);
  }
}

// Objects travel as superjson; a Date inside becomes its ISO string.
const when = new Date("2026-01-02T03:04:05.000Z");
const handle = await tasks.trigger("kiln.noop", { hello: "sdk", when, list: [1, 2, 3] }, { tags: ["sdk-tag"] });
assert.match(handle.id, /^run_/);
assert.ok(handle.publicAccessToken, "the trigger answer carries a public access token");
console.log("ok trigger");

const completed = await until(handle.id, (run) => run.isCompleted);
assert.equal(completed.status, "COMPLETED");
assert.deepEqual(completed.output, { hello: "sdk", when: when.toISOString(), list: [1, 2, 3] });
assert.equal(completed.attemptCount, 1);
assert.deepEqual(completed.tags, ["sdk-tag"]);
assert.ok(completed.createdAt instanceof Date);
console.log("ok retrieve");

const polled = await runs.poll(handle.id, { pollIntervalMs: 100 });
assert.equal(polled.status, "COMPLETED");
console.log("ok poll");

const delayed = await tasks.trigger("kiln.noop", { later: true }, { delay: "1h" });
assert.equal((await runs.retrieve(delayed.id)).status, "DELAYED");
const rescheduled = await runs.reschedule(delayed.id, { delay: "2h" });
assert.equal(rescheduled.status, "DELAYED");
assert.ok(rescheduled.delayedUntil.getTime() - Date.now() > 90 * 60 * 1000, "moved to about 2 h from now");
console.log("ok reschedule");
await runs.cancel(delayed.id);
const canceled = await runs.retrieve(delayed.id);
assert.equal(canceled.status, "CANCELED");
assert.equal(canceled.isCancelled, true);
console.log("ok cancel");

const replayed = await runs.replay(handle.id);
assert.notEqual(replayed.id, handle.id);
const replayRun = await until(replayed.id, (run) => run.isCompleted);
assert.deepEqual(replayRun.output, completed.output);
console.log("ok replay");

const first = await tasks.trigger("kiln.noop", { n: 1 }, { idempotencyKey: "sdk-idem-1" });
const second = await tasks.trigger("kiln.noop", { n: 2 }, { idempotencyKey: "sdk-idem-1" });
assert.equal(second.id, first.id);
console.log("ok idempotency");

const listed = [];
for await (const run of runs.list({ tag: "sdk-tag", status: ["COMPLETED"] })) {
  listed.push(run.id);
}
assert.ok(listed.includes(handle.id), `list by tag found ${listed}`);
assert.ok(listed.includes(replayed.id), "a replay keeps its tags");
console.log("ok list");

// Supermark's notification debounce: a new event cancels the pending
// notifications of the same document (found by tag and status), then
// schedules a fresh one.
const pending = [];
for (let n = 0; n < 3; n++) {
  pending.push((await tasks.trigger("kiln.noop", { n }, { delay: "40d", tags: ["debounce-doc-1"] })).id);
}
let canceledCount = 0;
for await (const run of runs.list({ tag: "debounce-doc-1", status: ["DELAYED", "QUEUED"] })) {
  await runs.cancel(run.id);
  canceledCount++;
}
assert.equal(canceledCount, 3);
for (const id of pending) assert.equal((await runs.retrieve(id)).status, "CANCELED");
const fresh = await tasks.trigger("kiln.noop", { fresh: true }, { delay: "40d", tags: ["debounce-doc-1"] });
const stillPending = [];
for await (const run of runs.list({ tag: "debounce-doc-1", status: ["DELAYED", "QUEUED"] })) stillPending.push(run.id);
assert.deepEqual(stillPending, [fresh.id]);
console.log("ok debounce");

// A public access token made by the SDK (signed locally with the secret
// key) reads the runs its scopes name, and nothing else.
const runToken = await auth.createPublicToken({ scopes: { read: { runs: [handle.id] } } });
const tagToken = await auth.createPublicToken({ scopes: { read: { tags: ["sdk-tag"] } } });
const untagged = await tasks.trigger("kiln.noop", { untagged: true });
await auth.withAuth({ accessToken: runToken }, async () => {
  assert.equal((await runs.retrieve(handle.id)).status, "COMPLETED");
  await assert.rejects(runs.retrieve(untagged.id), (error) => error.status === 403);
});
await auth.withAuth({ accessToken: tagToken }, async () => {
  assert.equal((await runs.retrieve(replayed.id)).id, replayed.id);
  await assert.rejects(runs.retrieve(untagged.id), (error) => error.status === 403);
});
console.log("ok public token");

const text = await tasks.trigger("kiln.noop", "plain text payload");
const textRun = await until(text.id, (run) => run.isCompleted);
assert.equal(textRun.output, "plain text payload");
console.log("ok text payload");

// Schedules: create (an upsert by deduplicationKey), read, change, pause.
const schedule = await schedules.create({
  task: "kiln.noop",
  cron: "0 2 * * *",
  timezone: "Asia/Kolkata",
  externalId: "team-1",
  deduplicationKey: "sdk-nightly",
});
assert.match(schedule.id, /^sched_/);
assert.equal(schedule.type, "IMPERATIVE");
assert.equal(schedule.active, true);
assert.equal(schedule.generator.expression, "0 2 * * *");
// 02:00 in Kolkata is 20:30 UTC.
assert.equal(schedule.nextRun.getUTCHours(), 20);
assert.equal(schedule.nextRun.getUTCMinutes(), 30);
const again = await schedules.create({ task: "kiln.noop", cron: "0 3 * * *", deduplicationKey: "sdk-nightly" });
assert.equal(again.id, schedule.id, "the same deduplicationKey updates the schedule");
assert.equal(again.timezone, "UTC");
const updated = await schedules.update(schedule.id, { task: "kiln.noop", cron: "30 4 * * 1", externalId: "team-2" });
assert.equal(updated.externalId, "team-2");
assert.equal(updated.nextRun.getUTCDay(), 1);
assert.equal((await schedules.deactivate(schedule.id)).active, false);
assert.ok((await schedules.retrieve(schedule.id)).nextRun == null, "a paused schedule has no next run");
assert.equal((await schedules.activate(schedule.id)).active, true);
const page = await schedules.list({ perPage: 10 });
assert.ok(page.data.some((s) => s.id === schedule.id));
const zones = await schedules.timezones();
assert.ok(zones.timezones.includes("Europe/Berlin"));
await schedules.del(schedule.id);
await assert.rejects(schedules.retrieve(schedule.id), (error) => error.status === 404);
console.log("ok schedules");

// A payload over 128 KiB: SDK 4.8 on offloads it as a packet (upload link,
// PUT, then "application/store"); earlier SDKs send it inline. Either way
// the run gets the payload itself.
const big = { rows: Array.from({ length: 3000 }, (_, n) => ({ n, text: "x".repeat(60) })) };
const bigHandle = await tasks.trigger("kiln.noop", big);
const bigRun = await until(bigHandle.id, (run) => run.isCompleted ?? run.status === "COMPLETED");
assert.equal(bigRun.output.rows.length, 3000);
assert.equal(bigRun.output.rows[2999].n, 2999);
const offloaded = fetched.some((call) => call.startsWith("PUT") && call.includes("/api/v2/packets/"));
if (sdkPackage === "trigger-sdk-latest") assert.ok(offloaded, `the payload went as a packet: ${fetched.join("\n")}`);
console.log(`ok large payload${offloaded ? " (offloaded)" : ""}`);

// A task id that needs path encoding reaches kiln whole: the SDK encodes
// it, kiln decodes it (and, not knowing it, names it).
await assert.rejects(
  tasks.trigger("team/send notification?x=1", {}),
  (error) => error.status === 404 && error.message.includes("team/send notification?x=1"),
);
console.log("ok encoded task id");

// An endpoint kiln does not implement is an error naming it, raised at once.
await assert.rejects(
  envvars.list("proj_supermark", "prod"),
  (error) => error.status === 404 && /no route for \/api\/v1\/projects\/proj_supermark\/envvars\/prod/.test(error.message),
);
console.log("ok unsupported endpoint");
