// The console's one script: the live tail and the replays' progress bars. Everything it puts on
// the page goes in as text (textContent), never as markup.
"use strict";

function startTail(box) {
  const list = document.getElementById("tail-events");
  const state = document.getElementById("tail-state");
  const source = new EventSource(box.dataset.stream);
  source.addEventListener("open", () => { state.textContent = "connected, waiting for events"; });
  source.addEventListener("error", () => { state.textContent = "disconnected, retrying"; });
  source.addEventListener("cloudevent", (message) => {
    state.textContent = "connected";
    let event = {};
    try { event = JSON.parse(message.data); } catch (e) { event = {}; }
    const item = document.createElement("div");
    item.className = "tailed";
    const link = document.createElement("a");
    link.href = box.dataset.events + "/" + encodeURIComponent(event.id || "") + "?at=" + encodeURIComponent(message.lastEventId);
    link.textContent = (event.type || "event") + " · " + (event.id || "");
    const body = document.createElement("pre");
    body.className = "json";
    body.textContent = JSON.stringify(event, null, 2);
    item.append(link, body);
    list.prepend(item);
    while (list.children.length > 200) { list.lastElementChild.remove(); }
  });
}

function watchReplay(row) {
  const bar = row.querySelector("progress");
  const label = row.querySelector(".replay-state");
  const tick = async () => {
    let replay;
    try {
      const answer = await fetch(row.dataset.progress, { credentials: "same-origin" });
      if (!answer.ok) { return; }
      replay = await answer.json();
    } catch (e) { setTimeout(tick, 2000); return; }
    bar.max = Math.max(1, replay.total);
    bar.value = replay.replayed;
    label.textContent = replay.state + " · " + replay.replayed + " / " + replay.total;
    if (replay.state === "running") { setTimeout(tick, 1000); return; }
    const cancel = row.querySelector("form");
    if (cancel) { cancel.remove(); }  // a finished replay cannot be cancelled
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  const tail = document.getElementById("tail");
  if (tail) { startTail(tail); }
  document.querySelectorAll("[data-progress]").forEach(watchReplay);
});
