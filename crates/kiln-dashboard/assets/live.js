// Live updates: an element with data-live names a server-sent event
// stream; on each event the page is fetched again and the element's
// content replaced with the fresh one, at most once a second (a busy
// environment changes runs thousands of times a second). Reading works
// without this script.
"use strict";
const LEAST_INTERVAL_MS = 1000;
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
for (const region of document.querySelectorAll("[data-live]")) {
  let busy = false;
  let again = false;
  let lastFetch = 0;
  const refresh = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        await pause(Math.max(0, lastFetch + LEAST_INTERVAL_MS - Date.now()));
        lastFetch = Date.now();
        const response = await fetch(location.href, { credentials: "same-origin" });
        if (!response.ok) break;
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById(region.id);
        // Unchanged content is left alone: a button about to be clicked
        // stays the same button.
        if (fresh && fresh.innerHTML !== region.innerHTML) region.innerHTML = fresh.innerHTML;
      } while (again);
    } finally {
      busy = false;
    }
  };
  const events = new EventSource(region.dataset.live);
  events.addEventListener("change", refresh);
  // A page left open in the back-forward cache would hold its stream's
  // connection, and a browser allows only six to one server: the next
  // pages would wait for one. Close it on leaving; a page brought back
  // from the cache is fetched anew.
  addEventListener("pagehide", () => events.close());
  addEventListener("pageshow", (event) => { if (event.persisted) location.reload(); });
  region.dataset.liveState = "listening";
}
