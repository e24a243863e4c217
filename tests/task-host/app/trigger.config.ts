import { defineConfig, timeout } from "@trigger.dev/sdk/v3";
import { additionalPackages } from "@trigger.dev/build/extensions/core";

export default defineConfig({
  project: "proj_kilnsample",
  dirs: ["./trigger"],
  // As Supermark sets it: no limit unless a task has its own.
  maxDuration: timeout.None,
  retries: {
    enabledInDev: true,
    default: { maxAttempts: 3, minTimeoutInMs: 200, maxTimeoutInMs: 1_000, factor: 2 },
  },
  build: { extensions: [additionalPackages({ packages: ["left-pad"] })] },
});
