// Live updates: an element with data-live names a server-sent event
// stream; on each event the page is fetched again and the element's
// content replaced with the fresh one. Reading works without this script.
"use strict";
for (const region of document.querySelectorAll("[data-live]")) {
  let busy = false;
  let again = false;
  const refresh = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
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
  region.dataset.liveState = "listening";
}
