// Realtime through the SDK package named by KILN_SDK_PACKAGE: a subscriber
// with a public token sees a run go from QUEUED to COMPLETED, with progress
// metadata in between; a tag subscription sees the runs of its tag.
// Prints "ok <step>"; any failed assertion exits non-zero.
import assert from "node:assert/strict";

const sdkPackage = process.env.KILN_SDK_PACKAGE ?? "@trigger.dev/sdk";
const { auth, configure, runs, tasks } = await import(`${sdkPackage}/v3`);
configure({ baseURL: process.env.TRIGGER_API_URL, accessToken: process.env.TRIGGER_SECRET_KEY });

const tag = `realtime-${Date.now()}`;
// kiln's tasks file gives the queue "realtime" one slot: the first run
// holds it, so the second waits QUEUED until the subscriber has seen it
// QUEUED and the first is canceled. SDK 3 names a queue with an object,
// SDK 4 with its name.
const queue = sdkPackage === "trigger-sdk-3" ? { name: "realtime" } : "realtime";
const blocker = await tasks.trigger("kiln.sleep", { ms: 120000 }, { queue });
const watched = await tasks.trigger("kiln.sleep", { ms: 2000 }, { queue, tags: [tag] });

const token = await auth.createPublicToken({ scopes: { read: { runs: [watched.id] } } });
const seen = [];
// The SDK's withAuth swaps the client's key for the public token until it
// returns, so this cancels with the secret key over plain fetch.
const released = (async () => {
  while (seen.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
  const canceled = await fetch(`${process.env.TRIGGER_API_URL}/api/v2/runs/${blocker.id}/cancel`, {
    method: "POST",
    headers: { authorization: `Bearer ${process.env.TRIGGER_SECRET_KEY}` },
  });
  assert.equal(canceled.status, 200);
})();
await auth.withAuth({ accessToken: token }, async () => {
  for await (const run of runs.subscribeToRun(watched.id)) {
    seen.push({ status: run.status, progress: run.metadata?.progress });
    if (run.status === "COMPLETED") break;
  }
});
await released;
assert.equal(seen[0].status, "QUEUED", JSON.stringify(seen));
assert.equal(seen.at(-1).status, "COMPLETED");
assert.equal(seen.at(-1).progress, 100);
const midway = seen.filter((s) => s.status === "EXECUTING" && s.progress > 0 && s.progress < 100);
assert.ok(midway.length > 0, `progress between 0 and 100 while executing: ${JSON.stringify(seen)}`);
const statuses = [...new Set(seen.map((s) => s.status))];
assert.deepEqual(statuses, ["QUEUED", "EXECUTING", "COMPLETED"]);
console.log("ok subscribe to run");

// A token for another run is refused with 403. (The SDK's subscription
// swallows fetch errors, so this asks the route the SDK reads directly.)
const other = await tasks.trigger("kiln.noop", {});
const refused = await fetch(`${process.env.TRIGGER_API_URL}/realtime/v1/runs/${other.id}?offset=-1`, {
  headers: { authorization: `Bearer ${token}` },
});
assert.equal(refused.status, 403);
assert.match((await refused.json()).error, /may not read run/);
console.log("ok subscribe refused");

// Runs with a tag, through a tag-scoped token.
const tagToken = await auth.createPublicToken({ scopes: { read: { tags: [tag] } } });
const second = await tasks.trigger("kiln.noop", { second: true }, { tags: [tag] });
const completed = new Set();
await auth.withAuth({ accessToken: tagToken }, async () => {
  for await (const run of runs.subscribeToRunsWithTag(tag)) {
    if (run.status === "COMPLETED") completed.add(run.id);
    if (completed.has(watched.id) && completed.has(second.id)) break;
  }
});
console.log("ok subscribe to tag");
// Leaving a for-await does not stop the SDK's long-poll behind it.
process.exit(0);
