// BullMQ's throughput on the same Redis as kiln, for the side-by-side table
// of benches/throughput.rs. Adds N jobs one by one with queue.add (up to
// CLIENTS adds in flight, as kiln's bench has CLIENTS HTTP clients), works
// them with a no-op processor at concurrency 50, and prints one JSON line.
// With BULK=n, CLIENTS clients add n jobs at a time with queue.addBulk.
import { Queue, Worker } from "bullmq";

const runs = Number(process.env.BENCH_RUNS ?? 50000);
const clients = Number(process.env.BENCH_CLIENTS ?? 64);
const bulk = Number(process.env.BULK ?? 0);
const url = new URL(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
const connection = { host: url.hostname, port: Number(url.port || 6379) };
const prefix = `bench_bullmq_${process.pid}_${Date.now()}`;
const name = "noop";

const queue = new Queue(name, { connection, prefix });
let completed = 0;
let resolveDone;
const done = new Promise((resolve) => (resolveDone = resolve));
const worker = new Worker(name, async () => {}, { connection, prefix, concurrency: 50 });
worker.on("completed", () => {
  completed += 1;
  if (completed === runs) resolveDone();
});
await worker.waitUntilReady();

const started = performance.now();
let next = 0;
async function client() {
  while (next < runs) {
    const i = next++;
    await queue.add("noop", { i });
  }
}
// BULK=n: jobs added n at a time with addBulk, as kiln's batch triggers.
async function bulkClient() {
  while (next < runs) {
    const first = next;
    next = Math.min(runs, next + bulk);
    const jobs = [];
    for (let i = first; i < next; i++) jobs.push({ name: "noop", data: { i } });
    await queue.addBulk(jobs);
  }
}
await Promise.all(Array.from({ length: clients }, bulk > 0 ? bulkClient : client));
const addedIn = (performance.now() - started) / 1000;
await done;
const total = (performance.now() - started) / 1000;

// Latencies from BullMQ's own timestamps (ms): added → processed → finished.
const jobs = await queue.getJobs(["completed"], 0, runs - 1);
const startLag = jobs.map((j) => j.processedOn - j.timestamp).sort((a, b) => a - b);
const doneLag = jobs.map((j) => j.finishedOn - j.timestamp).sort((a, b) => a - b);
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

console.log(JSON.stringify({
  runs,
  addedPerSec: runs / addedIn,
  processedPerSec: runs / total,
  startP50: pct(startLag, 50), startP99: pct(startLag, 99), startMax: startLag.at(-1),
  doneP50: pct(doneLag, 50), doneP99: pct(doneLag, 99), doneMax: doneLag.at(-1),
}));
await worker.close();
await queue.obliterate({ force: true });
await queue.close();
