// ugc.js: the cinema's event SDK. An ES module with no dependencies and no build step.
//
//   import ugc from "/sdk/ugc.js";
//   ugc.init({ endpoint: "https://ugc.cinema.example", getToken: () => myToken() });
//   ugc.track({ type: "pause", film_id, position: 754 });
//
// Every event gets an `event_id` and `occurred_at` when tracked, so a retry is the same
// event and the server stores it once. The queue lives in localStorage until the server
// has acknowledged it: a dropped network, a 429 or a 503 keeps it (retried with backoff
// and jitter, honouring Retry-After, and sent again on the next page load); a closed or
// hidden page sends it with keepalive requests that carry the token in the body.

const STORE_PREFIX = "ugc.q.";
// Keepalive requests share a 64 KiB budget per page; a little is left for the headers.
const KEEPALIVE_BUDGET = 60000;

/** A random UUID: `crypto.randomUUID` where the page is a secure context, else v4 by hand. */
export function uuid() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Retry-After (seconds or an HTTP date) in ms, or null when absent or unreadable. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value == null || value === "") return null;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/** The wait before retry number `attempt` (1, 2, …): exponential, capped, with "equal
 * jitter" (half fixed, half random) so many clients do not come back at once; never
 * shorter than the server's Retry-After. */
export function backoffDelay(attempt, { minMs, maxMs }, retryAfterMs = null, random = Math.random) {
  const base = Math.min(maxMs, minMs * 2 ** Math.max(0, attempt - 1));
  const wait = base / 2 + random() * (base / 2);
  return retryAfterMs == null ? wait : Math.max(wait, retryAfterMs);
}

/** Keeps the newest `max` events; returns how many of the oldest were dropped. */
export function bound(queue, max) {
  const over = Math.max(0, queue.length - max);
  if (over) queue.splice(0, over);
  return over;
}

function cookie(name) {
  const hit = document.cookie.split(";").map((c) => c.trim().split("=")).find(([k]) => k === name);
  return hit ? decodeURIComponent(hit.slice(1).join("=")) : null;
}

function createUgc() {
  let cfg = null;
  let queue = [];
  let key = null; // this page's localStorage key
  let lastToken = null; // what a page being closed sends: no time to await getToken then
  let attempt = 0;
  let retryAt = 0;
  let timer = null;
  let chain = Promise.resolve();
  const sentOnExit = new Set();
  const stats = { sent: 0, rejected: 0, dropped: 0, retries: 0 };

  const report = (err) => {
    try {
      cfg.onError(err);
    } catch {
      // A broken handler must not stop delivery.
    }
  };

  function save() {
    try {
      if (queue.length) localStorage.setItem(key, JSON.stringify(queue));
      else localStorage.removeItem(key);
    } catch {
      // Storage full or disabled: the queue still lives in memory.
    }
  }

  // Queues left by earlier pages of this origin (closed tabs, reloads) become ours.
  // A tab still open may send some of them too: the event ids make that harmless.
  function adopt() {
    const found = [];
    try {
      for (let i = localStorage.length - 1; i >= 0; i--) {
        const k = localStorage.key(i);
        if (!k || !k.startsWith(STORE_PREFIX + cfg.endpoint + "|") || k === key) continue;
        const q = JSON.parse(localStorage.getItem(k) || "[]");
        if (Array.isArray(q)) found.push(...q);
        localStorage.removeItem(k);
      }
    } catch {
      // Unreadable storage: nothing to adopt.
    }
    const seen = new Set(queue.map((e) => e.event_id));
    const fresh = found.filter((e) => e && !seen.has(e.event_id) && seen.add(e.event_id));
    fresh.sort((a, b) => String(a.occurred_at).localeCompare(String(b.occurred_at)));
    queue.unshift(...fresh);
    trim();
  }

  function trim() {
    const dropped = bound(queue, cfg.maxQueue);
    if (dropped) {
      stats.dropped += dropped;
      report({ kind: "dropped", count: dropped, total: stats.dropped, message: `queue over ${cfg.maxQueue} events: the oldest ${dropped} dropped` });
    }
  }

  async function token() {
    const t = cfg.getToken ? await cfg.getToken() : cfg.token;
    if (t) lastToken = t;
    return t || null;
  }

  function schedule(ms) {
    if (timer) clearTimeout(timer);
    timer = queue.length ? setTimeout(() => { timer = null; flush(); }, Math.max(0, ms)) : null;
  }

  function retryLater(retryAfter, why) {
    attempt += 1;
    stats.retries += 1;
    const wait = backoffDelay(attempt, { minMs: cfg.minBackoffMs, maxMs: cfg.maxBackoffMs }, parseRetryAfter(retryAfter));
    retryAt = Date.now() + wait;
    report({ kind: "retrying", message: why, retryInMs: Math.round(wait), pending: queue.length });
    schedule(wait);
    return false;
  }

  function forget(batch) {
    const ids = new Set(batch.map((e) => e.event_id));
    queue = queue.filter((e) => !ids.has(e.event_id));
    save();
  }

  // What the server said about a batch; true when it was taken or refused for good.
  async function settle(batch, res) {
    if (res.status === 429 || res.status >= 500) {
      return retryLater(res.headers.get("Retry-After"), `server answered ${res.status}`);
    }
    let body = null;
    try {
      body = await res.json();
    } catch {
      // Not JSON: judged by the status alone.
    }
    if (res.status === 401) {
      // The token, not the events, is wrong: keep them for a fresh token (getToken).
      return retryLater(null, `unauthorized: ${body && body.message}`);
    }
    if ((res.status === 202 || res.status === 422) && body && Array.isArray(body.results)) {
      for (const r of body.results) {
        if (r.status === "rejected") {
          stats.rejected += 1;
          report({ kind: "rejected", event: batch[r.index], field: r.field, reason: r.reason, errors: r.errors });
        } else stats.sent += 1;
      }
    } else if (!res.ok) {
      stats.rejected += batch.length;
      report({ kind: "rejected", events: batch, status: res.status, message: body && body.message });
    } else stats.sent += batch.length;
    attempt = 0;
    retryAt = 0;
    forget(batch);
    return true;
  }

  async function sendOne() {
    const batch = queue.slice(0, cfg.batchSize);
    const t = await token();
    let res;
    try {
      res = await fetch(cfg.endpoint + "/api/v1/events/batch", {
        method: "POST",
        headers: Object.assign({ "Content-Type": "application/json" }, t ? { Authorization: "Bearer " + t } : {}),
        body: JSON.stringify(batch),
      });
    } catch (e) {
      return retryLater(null, `network: ${e && e.message}`);
    }
    return settle(batch, res);
  }

  async function drain() {
    while (queue.length && Date.now() >= retryAt) {
      if (!(await sendOne())) break;
    }
    if (queue.length && !timer) schedule(Math.max(retryAt - Date.now(), cfg.flushIntervalMs));
    return { pending: queue.length };
  }

  /** Sends what is queued now; resolves with `{pending}` once it is sent or backing off. */
  function flush() {
    chain = chain.then(drain, drain);
    return chain;
  }

  // A page being closed or hidden: no time for await. Everything queued goes in
  // keepalive requests with the token in a text/plain body (no header, no preflight); it
  // also stays in storage until acknowledged, so what does not make it goes next load.
  function flushOnExit() {
    save();
    let budget = KEEPALIVE_BUDGET;
    // visibilitychange and pagehide both fire on a close: send each event once.
    const unsent = queue.filter((e) => !sentOnExit.has(e.event_id));
    for (let i = 0; i < unsent.length; i += cfg.batchSize) {
      const batch = unsent.slice(i, i + cfg.batchSize);
      const body = JSON.stringify({ token: lastToken, events: batch });
      if (body.length > budget) break;
      budget -= body.length;
      batch.forEach((e) => sentOnExit.add(e.event_id));
      const url = cfg.endpoint + "/api/v1/events/beacon";
      try {
        fetch(url, { method: "POST", keepalive: true, headers: { "Content-Type": "text/plain" }, body })
          .then((res) => settle(batch, res), () => {});
      } catch {
        navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body], { type: "text/plain" }));
      }
    }
  }

  return {
    /**
     * endpoint: the ugc origin (default: the page's); token or getToken (may be async);
     * batchSize (20); flushIntervalMs (5000); maxQueue (1000, oldest dropped beyond);
     * minBackoffMs (1000) / maxBackoffMs (60000); onError(err) with err.kind one of
     * "rejected", "retrying", "dropped".
     */
    init(options = {}) {
      cfg = Object.assign(
        { endpoint: location.origin, batchSize: 20, flushIntervalMs: 5000, maxQueue: 1000, minBackoffMs: 1000, maxBackoffMs: 60000, onError() {} },
        options,
      );
      cfg.endpoint = String(cfg.endpoint).replace(/\/+$/, "");
      if (typeof cfg.token === "string") lastToken = cfg.token;
      key = STORE_PREFIX + cfg.endpoint + "|" + uuid();
      // A fresh start: another endpoint's backoff does not hold this one back.
      queue = [];
      attempt = 0;
      retryAt = 0;
      if (timer) clearTimeout(timer);
      timer = null;
      adopt();
      save();
      if (!this._listening) {
        this._listening = true;
        addEventListener("pagehide", () => cfg && flushOnExit());
        document.addEventListener("visibilitychange", () => {
          if (!cfg) return;
          if (document.visibilityState === "hidden") flushOnExit();
          else sentOnExit.clear();
        });
        addEventListener("online", () => { retryAt = 0; flush(); });
      }
      token().catch(() => {});
      if (queue.length) flush();
      return this;
    },
    /** Queues one event; returns its event_id. */
    track(event) {
      if (!cfg) throw new Error("ugc.init() first");
      const e = Object.assign({}, event);
      e.event_id = e.event_id || uuid();
      e.occurred_at = e.occurred_at || new Date().toISOString();
      queue.push(e);
      trim();
      save();
      if (queue.length >= cfg.batchSize && Date.now() >= retryAt) flush();
      else if (!timer) schedule(Math.max(retryAt - Date.now(), cfg.flushIntervalMs));
      return e.event_id;
    },
    flush,
    /** Events not yet acknowledged. */
    pending: () => queue.length,
    stats: () => Object.assign({ pending: queue.length }, stats),
    /** The viewer's token from the `access_token` cookie or a `#token=` fragment. */
    pageToken() {
      const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
      return m ? decodeURIComponent(m[1]) : cookie("access_token");
    },
  };
}

export const ugc = createUgc();
export default ugc;
