/* Stellwerk's first-party browser tracker: docs/tracking.md, "The browser tracker".
   <script src="https://collector.shop.example/t.js" data-write-key="KEY" async></script>
   stellwerk.page(); stellwerk.track("Order Completed", {total: 42}); stellwerk.identify("u1", {plan: "pro"});
   stellwerk.consent(["analytics"]) says what the visitor agreed to. */
(function (w, d) {
  "use strict";
  var me = d.currentScript, key = me && me.getAttribute("data-write-key");
  var base = me ? me.src.replace(/\/t\.js([?#].*)?$/, "") : "";
  var QUEUE = "stellwerk:queue", USER = "stellwerk:user", CONSENT = "stellwerk:consent";
  var MAX_QUEUE = 500, BATCH = 20, pending = [], queue = [], flushing = false, timer, delay = 1000;
  // The source's word: must the visitor consent before anything is sent, and to what?
  var loaded = false, required = null, needed = [];
  var store = null;
  try { store = w.localStorage; } catch (e) { /* blocked: a queue in memory only */ }

  function read(name) {
    try { return JSON.parse(store.getItem(name)); } catch (e) { return null; }
  }
  function forget(name) {
    try { store.removeItem(name); } catch (e) { /* none */ }
  }
  function write(name, value) {
    try { store.setItem(name, JSON.stringify(value)); } catch (e) { /* private mode, full */ }
  }
  function uuid() {
    var b = new Uint8Array(16), h = [], i;
    w.crypto.getRandomValues(b);
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    for (i = 0; i < 16; i++) h.push((b[i] + 256).toString(16).slice(1));
    h = h.join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  var purposes = read(CONSENT), user = read(USER) || {};
  // The collector replaces this with the visitor id of its cookie; without consent there is none.
  var anonymousId = uuid();

  function allowed() {
    return required === false || (purposes !== null && purposes.length > 0 &&
      needed.every(function (p) { return purposes.indexOf(p) >= 0; }));
  }

  function message(type, fields) {
    var m = {
      type: type, messageId: uuid(), anonymousId: anonymousId,
      timestamp: new Date().toISOString(),
      context: {
        library: { name: "stellwerk.js", version: "1" },
        page: { url: location.href, path: location.pathname, title: d.title, referrer: d.referrer },
        locale: navigator.language
      }
    }, k;
    if (user.id) m.userId = user.id;
    for (k in fields) m[k] = fields[k];
    return m;
  }

  function add(m) {
    pending.push(m);
    release();
  }

  // Messages wait in memory (nothing stored, nothing sent) until the source's settings are
  // known and, if the source requires it, the visitor consented; then they are queued in
  // localStorage and sent from there.
  function release() {
    if (required === null) return;
    if (!allowed()) {
      if (purposes !== null) pending = []; // consent refused (or too little): never sent
      return;
    }
    var m;
    if (!loaded) { // the last pages' messages first
      loaded = true;
      queue = (read(QUEUE) || []).concat(queue);
      if (user.id) write(USER, user);
    }
    while ((m = pending.shift())) {
      if (purposes) m.context.consent = { purposes: purposes };
      queue.push(m);
    }
    if (queue.length > MAX_QUEUE) queue = queue.slice(-MAX_QUEUE);
    write(QUEUE, queue);
    schedule(0);
  }

  // The latest call wins: coming back online, or a new message, cuts a backoff short.
  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(flush, ms);
  }

  function body(batch) {
    return JSON.stringify({ writeKey: key, batch: batch, sentAt: new Date().toISOString() });
  }

  function flush() {
    if (flushing || !queue.length || !allowed()) return;
    var batch = queue.slice(0, BATCH), ids = {};
    batch.forEach(function (m) { ids[m.messageId] = 1; });
    flushing = true;
    // text/plain keeps it a simple request (no preflight); the cookie rides along.
    fetch(base + "/v1/b", {
      method: "POST", body: body(batch), keepalive: true, credentials: "include",
      headers: { "Content-Type": "text/plain" }
    }).then(function (r) {
      flushing = false;
      if (r.status >= 500 || r.status === 429) throw r;
      // Taken, or refused for good (a 4xx will be refused again): either way not retried.
      queue = queue.filter(function (m) { return !ids[m.messageId]; });
      write(QUEUE, queue);
      delay = 1000;
      if (queue.length) schedule(0);
    }).catch(function () {
      flushing = false;
      delay = Math.min(delay * 2, 60000);
      schedule(delay); // offline or failing: kept in localStorage, tried again
    });
  }

  // On leaving the page the last messages go by beacon; they stay queued too, and a resend
  // on the next page is recognised by its messageId as a duplicate.
  w.addEventListener("pagehide", function () {
    if (queue.length && allowed() && navigator.sendBeacon)
      navigator.sendBeacon(base + "/v1/b", new Blob([body(queue.slice(0, BATCH))], { type: "text/plain" }));
  });
  w.addEventListener("online", function () { delay = 1000; schedule(0); });

  var api = {
    page: function (name, properties) {
      add(message("page", { name: name, properties: properties || {} }));
    },
    track: function (event, properties) {
      add(message("track", { event: event, properties: properties || {} }));
    },
    identify: function (userId, traits) {
      user = { id: userId };
      if (allowed()) write(USER, user);
      add(message("identify", { userId: userId, traits: traits || {} }));
    },
    consent: function (list) {
      purposes = list && list.length ? list.slice() : [];
      write(CONSENT, purposes);
      if (!purposes.length) { queue = []; forget(QUEUE); forget(USER); }
      release();
    }
  };

  // Calls made before the script loaded (window.stellwerk = [["track", ...], ...]) run now.
  var early = w.stellwerk;
  w.stellwerk = api;
  if (early && early.length) early.forEach(function (c) { api[c[0]].apply(api, c.slice(1)); });

  fetch(base + "/v1/b/settings?writeKey=" + encodeURIComponent(key || ""), { credentials: "omit" })
    .then(function (r) { return r.json(); })
    .then(function (s) { required = s.consentRequired !== false; needed = s.purposes || []; })
    .catch(function () { required = true; }) // unknown: the cautious answer
    .then(release);
})(window, document);
