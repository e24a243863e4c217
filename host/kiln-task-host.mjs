// kiln's task host: runs an app's own Trigger.dev task files (SDK 3.3 and
// 4.x) for kiln, unchanged. `kiln task-host --app DIR` starts it; `kiln
// task-host --print-script` writes it out for an app image without kiln.
//
// The main process (the supervisor) builds the app's task files with the
// app's own esbuild, starts worker children, registers the tasks they
// found with kiln's worker API (docs/task-host.md), claims runs, renews
// their leases and reports each attempt's result. Each child runs one
// attempt at a time with the app's own copy of @trigger.dev/core, exactly
// as Trigger.dev's own run worker sets it up; on 4.x a child is reused
// between runs, on 3.3 each attempt gets a fresh one.
//
// It must not guess: a missing SDK, an SDK older than 3.3, a missing
// esbuild or a config that does not load stops it with a message that
// names what to fix.
//
// Environment: TRIGGER_API_URL and TRIGGER_SECRET_KEY (the app's own),
// KILN_HOST_SLOTS (attempts at once, 2), KILN_HOST_GRACE_SECS (30).

import { fork } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

const ROLE = process.env.KILN_HOST_ROLE ?? "supervisor";
const API_URL = (process.env.TRIGGER_API_URL ?? "").replace(/\/$/, "");
const SECRET_KEY = process.env.TRIGGER_SECRET_KEY ?? "";
const APP_DIR = path.resolve(process.env.KILN_HOST_APP_DIR ?? process.cwd());
const BUILD_DIR = path.join(APP_DIR, ".kiln", "build");

function fail(message) {
  console.error(`kiln task-host: ${message}`);
  process.exit(2);
}

function log(message, fields = {}) {
  const extra = Object.entries(fields)
    .map(([k, v]) => ` ${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join("");
  console.error(`kiln task-host: ${message}${extra}`);
}

/** The app's @trigger.dev/sdk: its version, and a require() rooted in its
 * own directory, so @trigger.dev/core is the copy the SDK itself uses. */
function locateSdk() {
  const appRequire = createRequire(path.join(APP_DIR, "package.json"));
  let sdkPackageJson;
  try {
    sdkPackageJson = appRequire.resolve("@trigger.dev/sdk/package.json");
  } catch {
    fail(`no @trigger.dev/sdk in ${APP_DIR}: install the app's dependencies first`);
  }
  const version = JSON.parse(readFileSync(sdkPackageJson, "utf8")).version;
  const [major, minor] = version.split(".").map(Number);
  if (!(major === 4 || (major === 3 && minor >= 3))) {
    fail(`@trigger.dev/sdk ${version} is not supported: kiln's task host runs 3.3 and 4.x; upgrade the SDK`);
  }
  return { version, major, sdkRequire: createRequire(sdkPackageJson) };
}

async function importFrom(sdkRequire, specifier) {
  return import(pathToFileURL(sdkRequire.resolve(specifier)).href);
}

// ---------------------------------------------------------------- build

const TASK_FILE = /\.(ts|tsx|mts|js|jsx|mjs)$/;
const NOT_A_TASK_FILE = /(\.d\.ts|\.(test|spec)\.[a-z]+)$/;

function filesUnder(dir) {
  if (!existsSync(dir)) return [];
  const found = [];
  for (const entry of readdirSync(dir)) {
    if (entry === "node_modules" || entry.startsWith(".")) continue;
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) found.push(...filesUnder(full));
    else if (TASK_FILE.test(entry) && !NOT_A_TASK_FILE.test(entry)) found.push(full);
  }
  return found;
}

/** @trigger.dev/build is a build-time package, often missing from a
 * production install; its extensions only matter to Trigger's own build. */
const stubBuildPackage = {
  name: "kiln-stub-trigger-build",
  setup(build) {
    build.onResolve({ filter: /^@trigger\.dev\/build(\/.*)?$/ }, (args) => ({ path: args.path, namespace: "kiln-stub" }));
    build.onLoad({ filter: /.*/, namespace: "kiln-stub" }, () => ({
      contents: "const extension = () => ({ name: 'kiln-stub' }); export default extension;\n" +
        "export const prismaExtension = extension, ffmpeg = extension, additionalFiles = extension, " +
        "additionalPackages = extension, syncEnvVars = extension, puppeteer = extension, playwright = extension, " +
        "pythonExtension = extension, aptGet = extension, esbuildPlugin = extension, emitDecoratorMetadata = extension, " +
        "audioWaveform = extension, lightpanda = extension, syncVercelEnvVars = extension, " +
        "syncSupabaseEnvVars = extension, defineConfig = (c) => c;\n",
      loader: "js",
    }));
  },
};

async function esbuildOf() {
  const appRequire = createRequire(path.join(APP_DIR, "package.json"));
  try {
    return await import(pathToFileURL(appRequire.resolve("esbuild")).href);
  } catch {
    fail(`esbuild is not installed in ${APP_DIR}: add it (npm install --save-dev esbuild), as Trigger.dev's CLI does`);
  }
}

function configFile() {
  for (const name of ["trigger.config.ts", "trigger.config.mts", "trigger.config.js", "trigger.config.mjs"]) {
    const file = path.join(APP_DIR, name);
    if (existsSync(file)) return file;
  }
  fail(`no trigger.config.ts in ${APP_DIR}`);
}

function outPath(entry) {
  const relative = path.relative(APP_DIR, entry).replace(TASK_FILE, ".mjs");
  return path.join(BUILD_DIR, relative);
}

async function build(entries, esbuild) {
  await esbuild.build({
    entryPoints: entries,
    outdir: BUILD_DIR,
    outbase: APP_DIR,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    packages: "external",
    sourcemap: "inline",
    logLevel: "error",
    absWorkingDir: APP_DIR,
    plugins: [stubBuildPackage],
  });
}

/** Builds the config, reads its `dirs`, builds every task file. Answers
 * the built config and the task files as `{ entry, out }`. */
async function buildApp() {
  const esbuild = await esbuildOf();
  rmSync(BUILD_DIR, { recursive: true, force: true });
  const config = configFile();
  await build([config], esbuild);
  const loaded = await import(pathToFileURL(outPath(config)).href);
  const appConfig = loaded.default ?? loaded.config ?? {};
  const dirs = (appConfig.dirs && appConfig.dirs.length ? appConfig.dirs : ["trigger", "src/trigger"])
    .map((dir) => path.resolve(APP_DIR, dir));
  const entries = [...new Set(dirs.flatMap(filesUnder))].sort();
  if (entries.length === 0) fail(`no task files under ${dirs.map((d) => path.relative(APP_DIR, d)).join(", ")}`);
  await build(entries, esbuild);
  const files = entries.map((entry) => ({ entry: path.relative(APP_DIR, entry), out: outPath(entry) }));
  const hash = createHash("sha256");
  for (const file of files) hash.update(readFileSync(file.out));
  return { config: outPath(config), files, contentHash: hash.digest("hex").slice(0, 16) };
}

// ---------------------------------------------------------------- worker child

/** Sets up the SDK's managers as Trigger's own run worker does, imports
 * the task files, and runs attempts the supervisor sends. */
async function workerMain() {
  const { major, version, sdkRequire } = locateSdk();
  const files = JSON.parse(process.env.KILN_HOST_FILES);
  const configPath = process.env.KILN_HOST_CONFIG;
  const core = await importFrom(sdkRequire, "@trigger.dev/core/v3");
  const workers = await importFrom(sdkRequire, "@trigger.dev/core/v3/workers");
  const { TriggerTracer } = await importFrom(sdkRequire, "@trigger.dev/core/v3/tracer");
  const adapter = major === 4 ? await v4Adapter(core, workers) : await v3Adapter(core, workers);

  const configModule = await import(pathToFileURL(configPath).href);
  const config = configModule.default ?? configModule.config ?? {};
  const tracingSDK = new workers.TracingSDK({
    url: process.env.TRIGGER_OTEL_EXPORTER_OTLP_ENDPOINT ?? "http://127.0.0.1:4318",
    instrumentations: config.telemetry?.instrumentations ?? config.instrumentations ?? [],
    exporters: config.telemetry?.exporters ?? [],
    logExporters: config.telemetry?.logExporters ?? [],
    diagLogLevel: "none",
    forceFlushTimeoutMillis: 5_000,
  });
  const otelTracer = tracingSDK.getTracer("kiln-task-host", version);
  const otelLogger = tracingSDK.getLogger("kiln-task-host", version);
  const tracer = new TriggerTracer({ tracer: otelTracer, logger: otelLogger });
  const consoleInterceptor = new workers.ConsoleInterceptor(otelLogger, config.enableConsoleLogging ?? true, config.disableConsoleInterceptor ?? false, 1024);
  const level = process.env.TRIGGER_LOG_LEVEL ?? config.logLevel ?? "info";
  core.logger.setGlobalTaskLogger(
    new workers.OtelTaskLogger({ logger: otelLogger, tracer, level: workers.logLevels.includes(level) ? level : "info", maxAttributeCount: 1024 }),
  );
  adapter.registerHooks(config, configModule.handleError);
  const manifest = await adapter.index(files, config);
  process.send({ type: "ready", manifest, sdkVersion: version });

  let cancel = new AbortController();
  process.on("message", async (message) => {
    if (message.type === "cancel") {
      cancel.abort("run cancelled");
      return;
    }
    if (message.type !== "execute") return;
    cancel = new AbortController();
    let result;
    try {
      result = await adapter.execute(
        message.execution,
        { tracer, tracingSDK, consoleInterceptor, config, workerId: message.workerId },
        cancel.signal,
      );
    } catch (error) {
      result = {
        ok: false,
        id: message.execution.run.id,
        error: { type: "INTERNAL_ERROR", code: "CONFIGURED_INCORRECTLY", message: String(error?.message ?? error), stackTrace: error?.stack },
        retry: { timestamp: Date.now() + 5_000, delay: 5_000 },
      };
    }
    await Promise.race([tracingSDK.flush(), new Promise((resolve) => setTimeout(resolve, 2_000))]).catch(() => {});
    process.send({ type: "result", runId: message.execution.run.id, result });
  });
}

/** The result of an attempt whose task the build does not hold. */
function notInThisBuild(execution) {
  return {
    ok: false,
    id: execution.run.id,
    error: { type: "INTERNAL_ERROR", code: "COULD_NOT_FIND_TASK", message: `task ${execution.task.id} is not in this build` },
  };
}

/** Asks kiln for the ends of the children `run` waits for while
 * `stillWaiting()` holds, handing each end not in `seen` to `onEnded`.
 * The supervisor is told meanwhile, so the waiting attempt holds no slot. */
async function waitForChildEnds(run, stillWaiting, seen, onEnded) {
  process.send({ type: "waiting", runId: run.runId, waiting: true });
  try {
    while (stillWaiting()) {
      let answer;
      try {
        answer = await kiln(`/worker/v1/runs/${run.runId}/waitpoints/wait`, {
          workerId: run.workerId,
          waitSeconds: 20,
          seen: [...seen],
        });
      } catch (error) {
        log("cannot ask kiln for the children's ends; retrying", { run: run.runId, error: error.message });
        await sleep(1_000);
        continue;
      }
      const fresh = answer.completedWaitpoints.filter((waitpoint) => !seen.has(waitpoint.id));
      for (const waitpoint of fresh) seen.add(waitpoint.id);
      if (fresh.length > 0) await onEnded(fresh);
    }
  } finally {
    process.send({ type: "waiting", runId: run.runId, waiting: false });
  }
}

/** The config's retry, maxDuration and machine defaults, applied to the
 * task manifests as Trigger's indexer applies them. */
function withConfigDefaults(tasks, config) {
  return tasks.map((task) => ({
    ...task,
    retry: task.retry ?? config.retries?.default,
    maxDuration: typeof task.maxDuration === "number" ? task.maxDuration : config.maxDuration,
    machine: task.machine?.preset ? task.machine : typeof config.machine === "string" ? { preset: config.machine } : task.machine,
  }));
}

async function v4Adapter(core, workers) {
  const locals = new workers.StandardLocalsManager();
  core.localsAPI.setGlobalLocalsManager(locals);
  const hooks = new workers.StandardLifecycleHooksManager();
  core.lifecycleHooks.setGlobalLifecycleHooksManager(hooks);
  const timeline = new workers.StandardRunTimelineMetricsManager();
  core.runTimelineMetrics.setGlobalManager(timeline);
  const usageManager = new workers.DevUsageManager();
  workers.usage.setGlobalUsageManager(usageManager);
  const timeoutManager = new workers.UsageTimeoutManager(usageManager);
  core.timeout.setGlobalManager(timeoutManager);
  // Past maxDuration the SDK only signals; as in Trigger's own runtime,
  // the supervisor then ends the attempt and the process with it.
  let timedRun;
  timeoutManager.registerListener?.(async (maxDurationInSeconds, elapsedTimeInSeconds) => {
    process.send({ type: "maxDuration", runId: timedRun, maxDurationInSeconds, elapsedTimeInSeconds });
  });
  const catalog = new workers.StandardResourceCatalog();
  core.resourceCatalog.setGlobalResourceCatalog(catalog);
  const traceContextManager = new workers.StandardTraceContextManager();
  core.traceContext.setGlobalManager(traceContextManager);
  const durableClock = new workers.DurableClock();
  core.clock.setGlobalClock(durableClock);
  const metadata = new workers.StandardMetadataManager(core.apiClientManager.clientOrThrow());
  core.runMetadata.setGlobalManager(metadata);
  const streams = workers.StandardRealtimeStreamsManager
    ? new workers.StandardRealtimeStreamsManager(core.apiClientManager.clientOrThrow(), process.env.TRIGGER_API_URL, false)
    : undefined;
  if (streams) core.realtimeStreams?.setGlobalManager(streams);
  const waitUntilManager = new workers.StandardWaitUntilManager(60_000);
  core.waitUntil.setGlobalManager(waitUntilManager);
  const heartbeatsManager = workers.StandardHeartbeatsManager ? new workers.StandardHeartbeatsManager(30_000) : undefined;
  if (heartbeatsManager) core.heartbeats?.setGlobalManager(heartbeatsManager);

  // A wait the SDK hands to the runtime. The process stays alive through
  // it: a DATETIME waitpoint (wait.for/wait.until past 5 s, recorded in
  // kiln by the SDK) is resolved here at its date; the children of
  // triggerAndWait/batchTriggerAndWait are asked of kiln (a long poll)
  // while the SDK says the attempt is suspendable.
  let current;
  let waiting;
  const delivered = new Set();
  const ipc = {
    send: async (type, payload) => {
      if (type === "SET_SUSPENDABLE" && payload?.suspendable && current && !waiting) {
        const run = current;
        waiting = waitForChildren(run).finally(() => {
          waiting = undefined;
        });
      }
    },
  };
  const runtimeManager = new workers.SharedRuntimeManager(ipc, false);
  function waitForChildren(run) {
    return waitForChildEnds(
      run,
      () => current === run && runtimeManager.resolversById.size > 0,
      delivered,
      (fresh) => runtimeManager.resolveWaitpoints(fresh),
    );
  }
  const waitForWaitpoint = runtimeManager.waitForWaitpoint.bind(runtimeManager);
  runtimeManager.waitForWaitpoint = (params) => {
    if (params.finishDate) {
      const at = new Date(params.finishDate).getTime();
      setTimeout(() => {
        runtimeManager.resolveWaitpoints([
          { id: params.waitpointFriendlyId, friendlyId: params.waitpointFriendlyId, type: "DATETIME", outputIsError: false, completedAt: new Date() },
        ]);
      }, Math.max(0, at - Date.now()));
    }
    return waitForWaitpoint(params);
  };
  core.runtime.setGlobalRuntimeManager(runtimeManager);
  let executions = 0;

  return {
    registerHooks(config, handleError) {
      if (config.init) core.lifecycleHooks.registerGlobalInitHook({ id: "config", fn: config.init });
      if (config.onStart) core.lifecycleHooks.registerGlobalStartHook({ id: "config", fn: config.onStart });
      if (config.onSuccess) core.lifecycleHooks.registerGlobalSuccessHook({ id: "config", fn: config.onSuccess });
      if (config.onFailure) core.lifecycleHooks.registerGlobalFailureHook({ id: "config", fn: config.onFailure });
      if (handleError) core.lifecycleHooks.registerGlobalCatchErrorHook({ id: "config", fn: handleError });
    },
    async index(files, config) {
      for (const file of files) {
        core.resourceCatalog.setCurrentFileContext(file.entry, file.out);
        await import(pathToFileURL(file.out).href);
        core.resourceCatalog.clearCurrentFileContext();
      }
      return {
        tasks: withConfigDefaults(core.resourceCatalog.listTaskManifests(), config),
        queues: core.resourceCatalog.listQueueManifests?.() ?? [],
      };
    },
    async execute(execution, { tracer, tracingSDK, consoleInterceptor, config, workerId }, cancelSignal) {
      current = { runId: execution.run.id, workerId };
      timedRun = execution.run.id;
      delivered.clear();
      locals.reset();
      hooks.reset();
      timeline.reset();
      usageManager.reset();
      timeoutManager.reset();
      metadata.reset();
      streams?.reset();
      waitUntilManager.reset();
      runtimeManager.reset();
      durableClock.reset();
      core.taskContext.disable();
      traceContextManager.reset();
      heartbeatsManager?.reset();

      const ctx = core.TaskRunContext.parse(execution);
      core.taskContext.setGlobalTaskContext({
        ctx,
        worker: { id: execution.attempt.backgroundWorkerId, version: execution.run.version ?? "kiln", contentHash: "kiln", engine: "V2" },
        isWarmStart: executions > 0,
      });
      const task = core.resourceCatalog.getTask(execution.task.id);
      if (!task) {
        return notInThisBuild(execution);
      }
      metadata.runId = execution.run.id;
      metadata.runIdIsRoot = !execution.run.rootTaskRunId;
      executions += 1;
      const executor = new workers.TaskExecutor(task, {
        tracer,
        tracingSDK,
        consoleInterceptor,
        retries: config.retries,
        isWarmStart: executions > 1,
        executionCount: executions,
      });
      metadata.startPeriodicFlush(1_000);
      const measurement = workers.usage.start();
      const timeoutController = core.timeout.abortAfterTimeout(execution.run.maxDuration);
      const signal = AbortSignal.any([cancelSignal, timeoutController.signal]);
      try {
        const { result } = await executor.execute(execution, ctx, signal);
        const sample = workers.usage.stop(measurement);
        return { ...result, usage: { durationMs: sample.cpuTime }, flushedMetadata: await metadata.stopAndReturnLastFlush() };
      } finally {
        current = undefined;
        core.taskContext.disable();
      }
    },
  };
}

async function v3Adapter(core, workers) {
  const catalog = new workers.StandardTaskCatalog();
  core.taskCatalog.setGlobalTaskCatalog(catalog);
  const metadata = new workers.StandardMetadataManager(core.apiClientManager.clientOrThrow(), process.env.TRIGGER_API_URL, "v1");
  core.runMetadata.setGlobalManager(metadata);
  const usageManager = new workers.DevUsageManager();
  workers.usage.setGlobalUsageManager(usageManager);
  core.timeout?.setGlobalManager?.(new workers.UsageTimeoutManager(usageManager));
  // 3.3 waits locally: wait.for is a timer in the process. A child run
  // the attempt waits for (triggerAndWait, batchTriggerAndWait) is asked
  // of kiln, as on 4.x, and answered as 3.3's TaskRunExecutionResult.
  let current;
  const ended = new Map();
  const seen = new Set();
  async function waitForRuns(ids) {
    const run = current;
    if (!run) throw new Error("a wait outside a run");
    await waitForChildEnds(
      run,
      () => ids.some((id) => !ended.has(id)),
      seen,
      (fresh) => {
        for (const waitpoint of fresh) ended.set(waitpoint.completedByTaskRun.id, waitpoint);
      },
    );
    return ids.map((id) => {
      const waitpoint = ended.get(id);
      return waitpoint.outputIsError
        ? { ok: false, id, error: waitpoint.output ? JSON.parse(waitpoint.output) : { type: "STRING_ERROR", raw: "no error" } }
        : { ok: true, id, output: waitpoint.output, outputType: waitpoint.outputType ?? "application/json" };
    });
  }
  core.runtime.setGlobalRuntimeManager({
    disable() {},
    async waitForDuration(ms) {
      await new Promise((resolve) => setTimeout(resolve, ms));
    },
    async waitUntil(date) {
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, date.getTime() - Date.now())));
    },
    async waitForTask({ id }) {
      return (await waitForRuns([id]))[0];
    },
    async waitForBatch({ id, runs }) {
      return { id, items: await waitForRuns(runs) };
    },
  });
  let handleErrorFn;
  return {
    registerHooks(_config, handleError) {
      handleErrorFn = handleError;
    },
    async index(files, config) {
      const tasks = [];
      for (const file of files) {
        const module = await import(pathToFileURL(file.out).href);
        for (const [exportName, value] of Object.entries(module)) {
          if (value && value[Symbol.for("trigger.dev/task")]) {
            const id = value.id;
            catalog.registerTaskFileMetadata(id, { exportName, filePath: file.entry, entryPoint: file.out });
          }
        }
      }
      for (const task of catalog.listTaskManifests()) tasks.push(task);
      return { tasks: withConfigDefaults(tasks, config), queues: [] };
    },
    async execute(execution, { tracer, tracingSDK, consoleInterceptor, config, workerId }, signal) {
      current = { runId: execution.run.id, workerId };
      const task = catalog.getTask(execution.task.id);
      if (!task) {
        return notInThisBuild(execution);
      }
      metadata.runId = execution.run.id;
      metadata.startPeriodicFlush?.(1_000);
      const executor = new workers.TaskExecutor(task, { tracer, tracingSDK, consoleInterceptor, config, handleErrorFn });
      const worker = { id: execution.attempt.backgroundWorkerId, version: execution.run.version ?? "kiln", contentHash: "kiln" };
      // 3.3's timeout manager answers a signal; past maxDuration the
      // supervisor ends the attempt and the process, as on 4.x.
      const timeoutSignal = core.timeout?.abortAfterTimeout?.(execution.run.maxDuration);
      timeoutSignal?.addEventListener?.("abort", () => {
        process.send({ type: "maxDuration", runId: execution.run.id, maxDurationInSeconds: execution.run.maxDuration });
      });
      const signals = timeoutSignal instanceof AbortSignal ? AbortSignal.any([signal, timeoutSignal]) : signal;
      const { result } = await executor.execute(execution, worker, {}, workers.usage.start(), signals);
      return { ...result, metadata: metadata.stopAndReturnLastFlush() };
    },
  };
}

// ---------------------------------------------------------------- supervisor

async function kiln(pathname, body, signal) {
  const response = await fetch(`${API_URL}${pathname}`, {
    method: "POST",
    headers: { authorization: `Bearer ${SECRET_KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(`${pathname} answered ${response.status}: ${answer.error ?? ""}`);
    error.status = response.status;
    throw error;
  }
  return answer;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Child {
  constructor(build, sdkMajor) {
    this.sdkMajor = sdkMajor;
    this.run = undefined;
    this.process = fork(new URL(import.meta.url).pathname, [], {
      cwd: APP_DIR,
      env: {
        ...process.env,
        // The SDK's logger exports to kiln, which keeps the lines with
        // their run, unless the app names its own collector.
        TRIGGER_OTEL_EXPORTER_OTLP_ENDPOINT: process.env.TRIGGER_OTEL_EXPORTER_OTLP_ENDPOINT ?? `${API_URL}/otel`,
        OTEL_EXPORTER_OTLP_HEADERS:
          process.env.OTEL_EXPORTER_OTLP_HEADERS ?? `Authorization=${encodeURIComponent(`Bearer ${SECRET_KEY}`)}`,
        KILN_HOST_ROLE: "worker",
        KILN_HOST_APP_DIR: APP_DIR,
        KILN_HOST_FILES: JSON.stringify(build.files),
        KILN_HOST_CONFIG: build.config,
      },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.ready = new Promise((resolve, reject) => {
      this.process.once("exit", (code, signal) => reject(new Error(`the worker exited (${signal ?? code}) before it was ready`)));
      this.process.on("message", (message) => {
        if (message.type === "ready") resolve(message);
        if (message.type === "result" && this.run?.runId === message.runId) this.run.done(message.result);
        if (message.type === "waiting" && this.run?.runId === message.runId) this.onWaiting?.(message.waiting);
        if (message.type === "maxDuration" && this.run?.runId === message.runId) {
          this.run.done({
            ok: false,
            id: message.runId,
            error: {
              type: "INTERNAL_ERROR",
              code: "MAX_DURATION_EXCEEDED",
              message: `Run exceeded maximum compute time (maxDuration) of ${message.maxDurationInSeconds} seconds`,
            },
          });
          this.kill();
        }
      });
    });
    this.exited = new Promise((resolve) => this.process.once("exit", (code, signal) => resolve(signal ?? code)));
  }

  /** Runs one attempt; answers the SDK's result, or a crash as a result. */
  async execute(claimed, workerId) {
    const result = new Promise((resolve) => {
      this.run = { runId: claimed.runId, done: resolve };
      this.exited.then((how) =>
        resolve({
          ok: false,
          id: claimed.runId,
          error: { type: "INTERNAL_ERROR", code: "TASK_PROCESS_EXITED_WITH_NON_ZERO_EXIT_CODE", message: `the task's process exited (${how})` },
          retry: { timestamp: Date.now() + 5_000, delay: 5_000 },
        }),
      );
    });
    this.process.send({ type: "execute", execution: claimed.execution, workerId });
    try {
      return await result;
    } finally {
      this.run = undefined;
    }
  }

  cancel() {
    this.process.send({ type: "cancel" });
  }

  kill() {
    this.dead = true;
    this.process.kill("SIGKILL");
  }
}

async function supervisorMain() {
  if (!API_URL || !SECRET_KEY) fail("TRIGGER_API_URL and TRIGGER_SECRET_KEY must be set (the app's own)");
  const slots = Math.max(1, Number(process.env.KILN_HOST_SLOTS ?? 2) | 0);
  const graceMs = Math.max(0, Number(process.env.KILN_HOST_GRACE_SECS ?? 30)) * 1000;
  const { major, version } = locateSdk();
  const started = Date.now();
  const built = await buildApp();
  log("built the app's task files", { files: built.files.length, ms: Date.now() - started, sdk: version });

  const first = new Child(built, major);
  const { manifest } = await first.ready;
  const registration = {
    host: { hostname: os.hostname(), pid: process.pid, slots },
    sdk: { version },
    contentHash: built.contentHash,
    tasks: manifest.tasks.map((task) => ({
      id: task.id,
      filePath: task.filePath,
      exportName: task.exportName,
      queue: task.queue,
      retry: task.retry,
      maxDuration: task.maxDuration,
      machine: task.machine,
      schedule: task.schedule?.cron ? { cron: task.schedule.cron, timezone: task.schedule.timezone } : undefined,
    })),
    queues: manifest.queues.map((q) => ({ name: q.name, concurrencyLimit: q.concurrencyLimit ?? undefined })),
  };
  async function register() {
    const registered = await kiln("/worker/v1/register", registration);
    log("registered", { workerId: registered.workerId, served: registered.served, servedByKiln: registered.servedByKiln });
    return registered.workerId;
  }
  let workerId = await register();
  if (process.env.KILN_HOST_READY_FILE) {
    (await import("node:fs")).writeFileSync(process.env.KILN_HOST_READY_FILE, workerId);
  }

  // 4.x children are reused; a 3.3 child runs one attempt.
  const idle = major === 4 ? [first] : [];
  if (major !== 4) first.kill();
  const running = new Map();
  // Attempts waiting for their children hold a child process but no slot:
  // a parent waiting on a child must not keep the child from running.
  const waitingRuns = new Set();
  let stopping = false;
  const claimAbort = new AbortController();
  const stop = () => {
    if (stopping) return;
    stopping = true;
    log("stopping: no new runs; letting running attempts finish", { running: running.size });
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);

  async function attempt(claimed) {
    // The run was claimed under this id; a later registration is another host.
    const owner = workerId;
    let child = idle.pop();
    if (!child) {
      child = new Child(built, major);
      await child.ready;
    }
    child.onWaiting = (isWaiting) => {
      if (isWaiting) waitingRuns.add(claimed.runId);
      else waitingRuns.delete(claimed.runId);
    };
    const beat = setInterval(async () => {
      try {
        const answer = await kiln(`/worker/v1/runs/${claimed.runId}/heartbeat`, { workerId: owner });
        if (answer.cancel && !claimed.canceled) {
          log("run canceled or taken away; stopping it", { run: claimed.runId });
          child.cancel();
          claimed.canceled = true;
          // The SDK's cancel is a signal a task may ignore: its process
          // goes after a grace period.
          setTimeout(() => child.kill(), 5_000).unref();
        }
      } catch (error) {
        log("heartbeat failed", { run: claimed.runId, error: error.message });
      }
    }, Math.max(1_000, Math.floor((claimed.leaseMs ?? 30_000) / 3)));
    try {
      const result = await child.execute(claimed, owner);
      if (!claimed.canceled) {
        for (let tries = 0; ; tries++) {
          try {
            await kiln(`/worker/v1/runs/${claimed.runId}/complete`, { workerId: owner, attempt: claimed.attempt, result });
            break;
          } catch (error) {
            if (tries >= 5 || (error.status && error.status < 500)) {
              log("could not report an attempt; its lease will bring it back", { run: claimed.runId, error: error.message });
              break;
            }
            await sleep(500 * 2 ** tries);
          }
        }
      }
    } finally {
      clearInterval(beat);
      waitingRuns.delete(claimed.runId);
      child.onWaiting = undefined;
      const reusable =
        major === 4 && !claimed.canceled && !child.dead && child.process.exitCode === null && child.process.signalCode === null;
      if (reusable) idle.push(child);
      else child.kill();
    }
  }

  let failures = 0;
  while (!stopping) {
    const free = slots - (running.size - waitingRuns.size);
    if (free <= 0) {
      await Promise.race([...running.values(), sleep(1_000)]);
      continue;
    }
    let claimed;
    try {
      ({ runs: claimed } = await kiln("/worker/v1/claim", { workerId, free, waitSeconds: 10 }, claimAbort.signal));
      failures = 0;
    } catch (error) {
      failures += 1;
      if (error.status === 404) {
        // kiln no longer knows this host (its database was restored, or
        // the registration was removed): register again and go on.
        log("kiln does not know this host; registering again");
        try {
          workerId = await register();
          continue;
        } catch (again) {
          log("registering again failed; retrying", { error: again.message });
        }
      }
      log("claim failed; retrying", { error: error.message });
      await sleep(Math.min(5_000, 200 * 2 ** failures));
      continue;
    }
    for (const run of claimed) {
      const done = attempt(run).finally(() => running.delete(run.runId));
      running.set(run.runId, done);
    }
  }
  const drained = await Promise.race([
    Promise.allSettled(running.values()).then(() => true),
    sleep(graceMs).then(() => false),
  ]);
  if (!drained) log("grace period over; unfinished runs come back when their leases lapse", { running: running.size });
  for (const child of idle) child.kill();
  process.exit(0);
}

if (ROLE === "worker") {
  // A worker lives only as long as its supervisor: when the supervisor
  // goes (even by SIGKILL), the IPC channel closes and so does the worker,
  // instead of lingering with its timers.
  process.on("disconnect", () => process.exit(0));
  workerMain().catch((error) => {
    console.error(`kiln task-host worker: ${error?.stack ?? error}`);
    process.exit(1);
  });
} else {
  supervisorMain().catch((error) => {
    console.error(`kiln task-host: ${error?.stack ?? error}`);
    process.exit(1);
  });
}
