// Triggers Supermark's tasks exactly as Supermark's webapp does
// (lib/api/documents/process-document.ts and the versions route), with the
// SDK version Supermark locks (4.1.2): a raw idempotency key, its tags,
// queue `conversion-<plan>` and `concurrencyKey: teamId`.
//
// SUPERMARK_TRIGGER is a JSON object {task, payload, plan, key}; prints
// the run's id and whether it was cached as one JSON line.
import assert from "node:assert/strict";
const { configure, tasks } = await import("@trigger.dev/sdk");

configure({ baseURL: process.env.TRIGGER_API_URL, accessToken: process.env.TRIGGER_SECRET_KEY });

const { task, payload, plan, key } = JSON.parse(process.env.SUPERMARK_TRIGGER);
const conversionQueue = (teamPlan) => `conversion-${teamPlan.split("+")[0]}`;
const handle = await tasks.trigger(task, payload, {
  idempotencyKey: key,
  tags: [`team_${payload.teamId}`, `document_${payload.documentId}`, `version:${payload.documentVersionId}`],
  queue: conversionQueue(plan),
  concurrencyKey: payload.teamId,
});
assert.match(handle.id, /^run_/);
console.log(JSON.stringify({ id: handle.id }));
