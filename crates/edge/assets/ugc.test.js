// Unit tests of ugc.js, run in the browser by /sdk/test.html (no test framework). The
// results land in `window.ugcTestResults` ({done, passed, failed: [{name, error}]}) and
// on the page.
import ugc, { backoffDelay, bound, parseRetryAfter, uuid, ugc as named } from "/sdk/ugc.js";

const tests = [];
const test = (name, fn) => tests.push({ name, fn });
const eq = (got, want, what = "") => {
  if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`${what} got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
};
const ok = (cond, what) => { if (!cond) throw new Error(what); };

test("default and named exports are the same client", () => {
  ok(ugc === named, "default export differs from the named one");
  for (const f of ["init", "track", "flush"]) ok(typeof ugc[f] === "function", `ugc.${f} is missing`);
});

test("uuid gives distinct version-4 UUIDs", () => {
  const ids = new Set(Array.from({ length: 200 }, uuid));
  eq(ids.size, 200, "distinct ids");
  for (const id of ids) ok(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id), id);
});

test("Retry-After reads seconds and HTTP dates", () => {
  eq(parseRetryAfter("3"), 3000);
  eq(parseRetryAfter(" 0 "), 0);
  const now = Date.parse("2026-01-01T00:00:00Z");
  eq(parseRetryAfter("Thu, 01 Jan 2026 00:00:05 GMT", now), 5000);
  eq(parseRetryAfter("Wed, 31 Dec 2025 23:00:00 GMT", now), 0, "a date in the past");
  eq(parseRetryAfter(null), null);
  eq(parseRetryAfter("soon"), null);
});

test("backoff doubles, is capped, jitters within half, honours Retry-After", () => {
  const cfg = { minMs: 1000, maxMs: 8000 };
  eq(backoffDelay(1, cfg, null, () => 0), 500);
  eq(backoffDelay(1, cfg, null, () => 1), 1000);
  eq(backoffDelay(3, cfg, null, () => 1), 4000);
  eq(backoffDelay(10, cfg, null, () => 1), 8000, "capped");
  eq(backoffDelay(10, cfg, null, () => 0), 4000, "capped, jittered");
  eq(backoffDelay(1, cfg, 30000, () => 0.5), 30000, "Retry-After wins when longer");
  const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(2, cfg)));
  ok(spread.size > 40, "jitter spreads retries");
  for (const d of spread) ok(d >= 1000 && d <= 2000, `attempt 2 waits 1–2 s, got ${d}`);
});

test("the queue keeps the newest events and counts the dropped", () => {
  const q = [1, 2, 3, 4, 5];
  eq(bound(q, 3), 2);
  eq(q, [3, 4, 5]);
  eq(bound(q, 3), 0);
});

test("track stamps event_id and occurred_at, keeps the client's own, and persists", async () => {
  // An endpoint nothing listens on: the queue must survive in storage.
  const errors = [];
  ugc.init({ endpoint: "http://127.0.0.1:9/", token: "t", flushIntervalMs: 60000, maxQueue: 3, onError: (e) => errors.push(e) });
  const id = ugc.track({ type: "custom", name: "a" });
  ok(/^[0-9a-f-]{36}$/.test(id), id);
  eq(ugc.track({ type: "custom", name: "b", event_id: "00000000-0000-4000-8000-000000000001" }), "00000000-0000-4000-8000-000000000001");
  ugc.track({ type: "custom", name: "c" });
  ugc.track({ type: "custom", name: "d" });
  eq(ugc.pending(), 3, "bounded to maxQueue");
  ok(errors.some((e) => e.kind === "dropped" && e.count === 1), "the drop is reported");
  const stored = Object.keys(localStorage).filter((k) => k.startsWith("ugc.q.http://127.0.0.1:9|"));
  eq(stored.length, 1, "one stored queue");
  const events = JSON.parse(localStorage.getItem(stored[0]));
  eq(events.map((e) => e.name), ["b", "c", "d"]);
  ok(events.every((e) => !Number.isNaN(Date.parse(e.occurred_at))), "occurred_at is a date");
});

test("a new page adopts the queue an earlier one left, once", async () => {
  const errors = [];
  ugc.init({ endpoint: "http://127.0.0.1:9", token: "t", flushIntervalMs: 60000, minBackoffMs: 2000, maxBackoffMs: 4000, onError: (e) => errors.push(e) });
  eq(ugc.pending(), 3, "adopted");
  const stored = Object.keys(localStorage).filter((k) => k.startsWith("ugc.q.http://127.0.0.1:9|"));
  eq(stored.length, 1, "the old key is gone");
  const r = await ugc.flush();
  eq(r.pending, 3, "nothing listens: kept");
  ok(ugc.stats().retries >= 1, "a retry is scheduled");
  const retry = errors.find((e) => e.kind === "retrying");
  ok(retry && retry.retryInMs >= 1000 && retry.retryInMs <= 2000, `the first retry waits 1–2 s: ${JSON.stringify(retry)}`);
  localStorage.removeItem(stored[0]);
});

const results = { done: false, passed: 0, failed: [] };
window.ugcTestResults = results;
for (const t of tests) {
  const li = document.createElement("li");
  try {
    await t.fn();
    results.passed += 1;
    li.className = "pass";
    li.textContent = `ok ${t.name}`;
  } catch (e) {
    results.failed.push({ name: t.name, error: String(e && e.message) });
    li.className = "fail";
    li.textContent = `FAIL ${t.name}: ${e && e.message}`;
  }
  document.getElementById("results").append(li);
}
results.done = true;
