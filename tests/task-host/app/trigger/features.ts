import { AbortTaskRunError, logger, metadata, retry, schedules, task, tasks, wait } from "@trigger.dev/sdk/v3";
import { greet } from "@/lib/greet";

/** metadata, logger and a path alias; the output is the greeting. */
export const hello = task({
  id: "host.hello",
  run: async (payload: { name: string }) => {
    metadata.set("progress", 0.5);
    metadata.set("stage", "greeting");
    logger.info("greeting", { name: payload.name });
    return { greeting: greet(payload.name) };
  },
});

/** AbortTaskRunError: failed at once, never retried. */
export const aborts = task({
  id: "host.aborts",
  run: async () => {
    throw new AbortTaskRunError("the mailbox does not exist");
  },
});

/** A plain throw on the first attempt: retried after the config's back-off. */
export const flaky = task({
  id: "host.flaky",
  run: async (_payload: unknown, { ctx }) => {
    if (ctx.attempt.number < 2) throw new Error(`attempt ${ctx.attempt.number} fails`);
    return { attempt: ctx.attempt.number };
  },
});

/** wait.for past 5 s: recorded in kiln, resolved in the host at its date. */
export const sleeps = task({
  id: "host.sleeps",
  run: async () => {
    const started = Date.now();
    await wait.for({ seconds: 8 });
    return { waitedMs: Date.now() - started };
  },
});

/** Past its maxDuration: TIMED_OUT. */
export const slow = task({
  id: "host.slow",
  maxDuration: 5,
  run: async () => {
    await new Promise((resolve) => setTimeout(resolve, 60_000));
    return { finished: true };
  },
});

/** tasks.trigger from inside a task: the child is linked to this run. */
export const parent = task({
  id: "host.parent",
  run: async (payload: { name: string }) => {
    const handle = await tasks.trigger<typeof hello>("host.hello", { name: payload.name });
    return { child: handle.id };
  },
});

/** A long run, to cancel or to stop the host under. */
export const long = task({
  id: "host.long",
  queue: { name: "host-long", concurrencyLimit: 5 },
  run: async (payload: { ms: number }) => {
    await new Promise((resolve) => setTimeout(resolve, payload.ms));
    return { sleptMs: payload.ms };
  },
});

/** triggerAndWait and batchTriggerAndWait: the parent goes on with its
 * children's outputs. */
export const waitsForChildren = task({
  id: "host.waits-for-children",
  run: async (payload: { name: string }) => {
    const one = await hello.triggerAndWait({ name: payload.name });
    const failed = await aborts.triggerAndWait({});
    const batch = await hello.batchTriggerAndWait([{ payload: { name: "one" } }, { payload: { name: "two" } }]);
    return {
      one: one.ok ? one.output.greeting : null,
      failed: failed.ok ? null : String((failed.error as Error | undefined)?.message ?? failed.error),
      batch: batch.runs.map((run) => (run.ok ? run.output.greeting : null)),
    };
  },
});

/** Does nothing: what `scripts/bench host` measures the host's own cost with. */
export const noop = task({
  id: "host.noop",
  run: async (payload: unknown) => payload,
});

/** retry.fetch: a server answering 500 then 200 is retried with back-off. */
export const fetchesWithRetry = task({
  id: "host.retry-fetch",
  run: async (payload: { url: string }) => {
    const response = await retry.fetch(payload.url, {
      retry: {
        byStatus: {
          "500-599": { strategy: "backoff", maxAttempts: 3, minTimeoutInMs: 100, maxTimeoutInMs: 300, factor: 2 },
        },
      },
    });
    return { status: response.status, body: await response.json() };
  },
});

/** A declarative schedule: kiln fires it from the cron in the code. */
export const nightly = schedules.task({
  id: "host.nightly",
  cron: "0 3 * * *",
  run: async (payload) => ({ firedFor: payload.timestamp }),
});

/** An output past the SDK's 128 KiB packet limit: uploaded as a packet. */
export const large = task({
  id: "host.large-output",
  run: async (payload: { kib: number }) => ({ text: "x".repeat(payload.kib * 1024) }),
});
