// Supermark's progress bar, as its browser hook reads it: a public token
// made as Supermark's /api/progress-token makes it (read scope on the tag
// `version:<id>`, 15 minutes), then a realtime subscription by that tag,
// while SUPERMARK_TRIGGER ({task, payload, plan, key}) is triggered as
// Supermark's webapp triggers it. Prints every status the subscription
// saw, as JSON, once a run of the tag completed.
const { auth, configure, runs, tasks } = await import("@trigger.dev/sdk");
configure({ baseURL: process.env.TRIGGER_API_URL, accessToken: process.env.TRIGGER_SECRET_KEY });

const { task, payload, plan, key } = JSON.parse(process.env.SUPERMARK_TRIGGER);
const tag = `version:${payload.documentVersionId}`;
const publicToken = await auth.createPublicToken({ scopes: { read: { tags: [tag] } }, expirationTime: "15m" });

const seen = [];
const timeout = setTimeout(() => {
  console.error(`no completed run of ${tag}: ${JSON.stringify(seen)}`);
  process.exit(1);
}, 120_000);
// The upload, then at once the subscription, as the page that shows the
// new document opens it.
await tasks.trigger(task, payload, {
  idempotencyKey: key,
  tags: [`team_${payload.teamId}`, `document_${payload.documentId}`, tag],
  queue: `conversion-${plan.split("+")[0]}`,
  concurrencyKey: payload.teamId,
});
await auth.withAuth({ accessToken: publicToken }, async () => {
  for await (const run of runs.subscribeToRunsWithTag(tag)) {
    seen.push({ status: run.status, metadata: run.metadata ?? null });
    if (run.status === "COMPLETED" || run.status === "FAILED") break;
  }
});
clearTimeout(timeout);
console.log(JSON.stringify(seen));
// The realtime client keeps its connection open; the test is over.
process.exit(0);
