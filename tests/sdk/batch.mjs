// Batch trigger through the SDK package named by KILN_SDK_PACKAGE
// (`@trigger.dev/sdk` is 4.1.2, Supermark's locked version; `trigger-sdk-3`
// is 3.3.17, Papermark's pin): 100 items, retrieve, a public token scoped to
// the batch. Prints "ok <step>"; any failed assertion exits non-zero.
import assert from "node:assert/strict";

const sdkPackage = process.env.KILN_SDK_PACKAGE ?? "@trigger.dev/sdk";
// Both generations export the API under `/v3` (3.x only there).
const { auth, batch, configure, runs } = await import(`${sdkPackage}/v3`);
configure({ baseURL: process.env.TRIGGER_API_URL, accessToken: process.env.TRIGGER_SECRET_KEY });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const tag = `batch-${sdkPackage.replace(/[^a-z0-9]/gi, "")}`;

const items = Array.from({ length: 100 }, (_, n) => ({
  id: "kiln.noop",
  payload: { n, at: new Date("2026-01-02T03:04:05.000Z") },
  options: { tags: [tag], idempotencyKey: n === 0 ? `${tag}-first` : undefined },
}));
const handle = await batch.trigger(items);
assert.match(handle.batchId, /^batch_/);
assert.ok(handle.publicAccessToken, "a token for the batch");
if (handle.runs !== undefined) {
  // SDK 3.x answers every run.
  assert.equal(handle.runs.length, 100);
  assert.ok(handle.runs.every((run) => run.id.startsWith("run_") && run.taskIdentifier === "kiln.noop"));
} else {
  assert.equal(handle.runCount, 100);
}
console.log("ok batch trigger");

// Every run of the tag completes, each with its own payload.
let completed = [];
for (let tries = 0; tries < 300; tries++) {
  completed = [];
  for await (const run of runs.list({ tag, status: ["COMPLETED"], limit: 100 })) completed.push(run);
  if (completed.length === 100) break;
  await sleep(100);
}
assert.equal(completed.length, 100, "all 100 runs completed");
const first = await runs.retrieve(completed.find(() => true).id);
assert.equal(first.output.at, "2026-01-02T03:04:05.000Z");
console.log("ok batch runs");

// The batch, read with the secret key and with its own public token.
let retrieved;
for (let tries = 0; tries < 100; tries++) {
  retrieved = await batch.retrieve(handle.batchId);
  if (retrieved.status === "COMPLETED") break;
  await sleep(100);
}
assert.equal(retrieved.id, handle.batchId);
assert.equal(retrieved.status, "COMPLETED");
assert.equal(retrieved.runCount, 100);
await auth.withAuth({ accessToken: handle.publicAccessToken }, async () => {
  assert.equal((await batch.retrieve(handle.batchId)).id, handle.batchId);
});
console.log("ok batch retrieve");

// The first item's idempotency key holds across batches.
const again = await batch.trigger([{ id: "kiln.noop", payload: { n: 0 }, options: { idempotencyKey: `${tag}-first` } }]);
const againBatch = await batch.retrieve(again.batchId);
if (againBatch.runs) {
  const firstRun = handle.runs ? handle.runs[0].id : (await batch.retrieve(handle.batchId)).runs[0];
  assert.equal(againBatch.runs[0], firstRun, "the idempotency key found the first batch's run");
} else if (again.runs) {
  assert.equal(again.runs[0].id, handle.runs[0].id);
  assert.equal(again.runs[0].isCached, true);
}
// A batch-level idempotency key: SDK 3 sends it as a header (kiln answers
// the earlier batch), SDK 4 derives one key per item; either way the same
// runs come back.
const keyed = [1, 2, 3].map((n) => ({ id: "kiln.noop", payload: { keyed: n } }));
const keyedFirst = await batch.trigger(keyed, { idempotencyKey: `${tag}-whole-batch` });
const keyedAgain = await batch.trigger(keyed, { idempotencyKey: `${tag}-whole-batch` });
const runIdsOf = async (handle) => handle.runs?.map((run) => run.id) ?? (await batch.retrieve(handle.batchId)).runs;
assert.deepEqual(await runIdsOf(keyedAgain), await runIdsOf(keyedFirst));
if (keyedAgain.runs) {
  assert.equal(keyedAgain.batchId, keyedFirst.batchId);
  assert.ok(keyedAgain.runs.every((run) => run.isCached));
}
console.log("ok batch idempotency");

// An item for a task kiln does not know refuses the batch, naming it.
await assert.rejects(
  batch.trigger([{ id: "kiln.noop", payload: {} }, { id: "no-such-task", payload: {} }]),
  // SDK 4.8 wraps the API's error in a BatchTriggerError.
  (error) => (error.status ?? error.cause?.status) === 404 && /items\[1\]/.test(error.message),
);
console.log("ok batch refused");
