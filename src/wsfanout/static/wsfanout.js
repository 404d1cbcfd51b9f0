// wsfanout.js: the browser client of the wsfanout.v1 protocol, one ES module with no
// dependencies. Reference: docs/js-client.md; the wire: docs/protocol.md.
//
// Theory of operation: each topic's stream is {e: epoch, o: the last offset accounted
// for, r: the last offset received (or where the client began to follow the stream),
// a: offsets announced lost beyond o, as sorted disjoint [first, last] ranges}; o and r
// are null until the client learns where the stream stands. A data frame at offset n
// accounts for everything below n: what was neither received nor announced is a hole.
// A heartbeat accounts for everything up to the offsets it names. A notice announces
// ranges; only what the client did not know yet is reported, so no loss is counted
// twice. Offsets in (r, o] were reported lost and never received: reconnecting sends r
// as `since`, and what the server replays of them is counted as recovered.
//
// Acknowledgements: every frame counts as taken once its events were dispatched to the
// listeners, from the connection's first. After an ack-request, the count goes to the
// server at once when the last ack is `interval` old, else from a timer when it is.

export const SUBPROTOCOL = "wsfanout.v1";

// The delay in ms before reconnection attempt `attempt` (0, 1, 2...): full jitter,
// uniform between min and a ceiling that doubles from 2 min up to max.
export function backoff(attempt, min = 500, max = 20000, random = Math.random) {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt + 1, 40));
  return min + random() * (ceiling - min);
}

// The parts of [lo, hi] that no range of `known` (sorted, disjoint) covers.
function uncovered(known, lo, hi) {
  const parts = [];
  for (const [first, last] of known) {
    if (lo > hi || first > hi) break;
    if (last < lo) continue;
    if (first > lo) parts.push([lo, first - 1]);
    lo = last + 1;
  }
  if (lo <= hi) parts.push([lo, hi]);
  return parts;
}

const isOffset = (value) => Number.isInteger(value) && value >= 0;
const isRange = (range) =>
  Array.isArray(range) && isOffset(range[0]) && isOffset(range[1]) && range[0] <= range[1];
const isTopic = (value) => value === undefined || typeof value === "string";
// [epoch, offset], as in `since` and heartbeats.
const isPosition = (p) => Array.isArray(p) && typeof p[0] === "string" && isOffset(p[1]);

function check(name, value, valid, constraint) {
  if (!valid) throw new TypeError(`${name}=${JSON.stringify(value)} ${constraint}`);
}

export function connect(url, options = {}) {
  const {
    topics = [],
    since = {},
    minDelay = 500,
    maxDelay = 20000,
    timeout = 30000,
  } = options;
  check("topics", topics, Array.isArray(topics) && topics.every((t) => typeof t === "string"),
    "must be an array of strings");
  check("minDelay", minDelay, minDelay > 0, "must be > 0");
  check("maxDelay", maxDelay, maxDelay >= minDelay, "must be >= minDelay");
  check("timeout", timeout, timeout >= 0, "must be >= 0 (0: never)");
  const streams = new Map();
  for (const [topic, place] of Object.entries(since)) {
    check(`since[${JSON.stringify(topic)}]`, place, isPosition(place), "must be [epoch, offset]");
    streams.set(topic, { e: place[0], o: place[1], r: place[1], a: [] });
  }
  const address = new URL(url, globalThis.location?.href);
  address.protocol = address.protocol.replace("http", "ws");
  for (const topic of topics) address.searchParams.append("topic", topic);

  const listeners = {};
  const stats = {
    received: 0, gaps: 0, lost: 0, recovered: 0, duplicates: 0, errors: 0, reconnects: 0,
    acks: 0,
  };
  const decoder = new TextDecoder();
  let socket = null;
  let timer = 0;
  let attempt = 0;
  let closed = false;
  let heard = 0; // when the current connection last received a frame (or began)
  let opened = 0; // when it opened, 0 before
  let useful = false; // whether it received a frame: the next backoff starts over
  // Acknowledgements on the current connection: frames taken, the count last sent,
  // the interval asked for (ms, null: none), when the last ack went, its timer.
  let taken = 0;
  let acked = 0;
  let ackEvery = null;
  let ackedAt = -Infinity;
  let ackTimer = 0;

  function emit(type, event) {
    for (const listener of listeners[type] || []) {
      try {
        listener(event);
      } catch (error) {
        // A listener's bug is the page's uncaught error, not the end of the client.
        setTimeout(() => {
          throw error;
        });
      }
    }
  }

  function fail(reason, data) {
    stats.errors++;
    emit("error", { reason, data });
  }

  function report(topic, stream, ranges, source, extra) {
    let count = 0;
    for (const [first, last] of ranges) count += last - first + 1;
    if (!count) return;
    stats.gaps++;
    stats.lost += count;
    emit("gap", { topic, epoch: stream.e, ranges, count, source, ...extra });
  }

  // The stream of `topic`, moved to `epoch`: a new epoch is a gap of unknown size.
  function streamOf(topic, epoch) {
    let stream = streams.get(topic);
    if (!stream) {
      streams.set(topic, (stream = { e: epoch, o: null, r: null, a: [] }));
    } else if (stream.e !== epoch) {
      const previous = { epoch: stream.e, offset: stream.r };
      Object.assign(stream, { e: epoch, o: 0, r: 0, a: [] });
      stats.gaps++;
      emit("gap", { topic, epoch, ranges: null, count: null, source: "epoch", previous });
    }
    return stream;
  }

  // Everything up to `last` is accounted for (`last` itself received, if `seen`): report
  // what was neither received nor announced, and move the stream on to `last`.
  function reach(topic, stream, last, source, seen) {
    const before = seen ? last - 1 : last;
    if (stream.o !== null && before > stream.o) {
      report(topic, stream, uncovered(stream.a, stream.o + 1, before), source);
    }
    if (stream.o === null) stream.o = stream.r = last; // where the client starts following
    else if (last > stream.o) stream.o = last;
    stream.a = stream.a.filter((range) => range[1] > last);
    if (stream.a.length && stream.a[0][0] <= last) stream.a[0] = [last + 1, stream.a[0][1]];
  }

  // A data frame at `offset`: whether it is new (not a duplicate).
  function place(topic, epoch, offset) {
    const stream = streamOf(topic, epoch);
    if (stream.r !== null && offset <= stream.r) {
      stats.duplicates++;
      return false;
    }
    const announced = stream.a.some(([first, last]) => first <= offset && offset <= last);
    if (announced || (stream.o !== null && offset <= stream.o)) stats.recovered++; // replayed
    reach(topic, stream, offset, "offsets", true);
    stream.r = offset;
    return true;
  }

  function notice(frame) {
    const { t: topic = "", e: epoch, ranges } = frame;
    if (!isTopic(frame.t) || typeof epoch !== "string" || !Array.isArray(ranges) ||
        !ranges.every(isRange)) {
      return fail("malformed gap notice", frame);
    }
    const stream = streamOf(topic, epoch);
    const news = [];
    for (const [first, last] of ranges) {
      const parts = uncovered(stream.a, Math.max(first, (stream.o ?? 0) + 1), last);
      stream.a = [...stream.a, ...parts].sort((x, y) => x[0] - y[0]);
      news.push(...parts);
    }
    report(topic, stream, news, "notice", { reasons: frame.reasons, keys: frame.keys });
  }

  function heartbeat(frame) {
    const { offsets } = frame;
    const entries = Object.entries(Object(offsets));
    if (!offsets || typeof offsets !== "object" || !entries.every(([, p]) => isPosition(p))) {
      return fail("malformed heartbeat", frame);
    }
    for (const [topic, [epoch, last]] of entries) {
      reach(topic, streamOf(topic, epoch), last, "heartbeat", false);
    }
    emit("heartbeat", frame);
  }

  function ackRequest(frame) {
    const { interval } = frame;
    if (interval !== null && !(typeof interval === "number" && interval > 0)) {
      return fail("malformed ack-request", frame);
    }
    clearTimeout(ackTimer); // armed for the old interval
    ackTimer = 0;
    ackEvery = interval === null ? null : interval * 1000;
  }

  // Send the ack owed now if the last one is `interval` old, else when it is.
  function ack() {
    if (ackEvery === null || taken <= acked || socket?.readyState !== 1) return;
    const now = performance.now();
    if (now - ackedAt >= ackEvery) {
      socket.send(JSON.stringify({ type: "ack", n: taken }));
      [acked, ackedAt] = [taken, now];
      stats.acks++;
    } else if (!ackTimer) {
      // A timer that fires early finds the ack not due yet and is armed again.
      ackTimer = setTimeout(() => {
        ackTimer = 0;
        ack();
      }, ackedAt + ackEvery - now);
    }
  }

  function control(frame) {
    if (frame.type === "gap") return notice(frame);
    if (frame.type === "ack-request") return ackRequest(frame);
    if (frame.type === "heartbeat") return heartbeat(frame);
    if (frame.type === "resume") {
      if (!isTopic(frame.t) || typeof frame.e !== "string") return fail("malformed resume", frame);
      streamOf(frame.t ?? "", frame.e);
      return emit("resume", frame);
    }
    if (typeof frame.type !== "string") return fail("control frame without a type", frame);
    emit("control", frame); // level announcements, and types newer than this client
  }

  function message(header, data, raw) {
    const { o: offset, e: epoch, t: topic = "", k: key, b: batch } = header;
    if (batch !== undefined) {
      const valid = (p) => Array.isArray(p) && isOffset(p[0]) && typeof p[1] === "string";
      if (!Array.isArray(batch) || !batch.every((p) => valid(p) && typeof p[2] === "string")) {
        return fail("malformed batch header", raw);
      }
      let fresh = 0;
      for (const [o, e, t] of batch) fresh += place(t, e, o);
      if (!fresh) return;
      stats.received += fresh;
      const parts = batch.map(([o, e, t]) => ({ offset: o, epoch: e, topic: t }));
      return emit("message", { data, batch: parts });
    }
    if (offset === undefined) {
      stats.received++; // sent to this subscriber alone: in no stream
      return emit("message", { data });
    }
    if (!isOffset(offset) || !offset || typeof epoch !== "string" || typeof topic !== "string") {
      return fail("malformed header", raw);
    }
    if (!place(topic, epoch, offset)) return;
    stats.received++;
    emit("message", { data, topic, offset, epoch, key });
  }

  function receive(event) {
    heard = Date.now();
    useful = true;
    const ws = socket;
    read(event.data);
    if (ws !== socket) return; // a listener closed the client
    taken++; // each frame, once its events were dispatched
    ack();
  }

  function read(raw) {
    let head = raw;
    let data;
    let cut;
    if (typeof raw === "string") {
      cut = raw.indexOf("\n");
      if (cut >= 0) [head, data] = [raw.slice(0, cut), raw.slice(cut + 1)];
    } else {
      const bytes = new Uint8Array(raw);
      cut = bytes.indexOf(10);
      head = decoder.decode(cut < 0 ? bytes : bytes.subarray(0, cut));
      data = bytes.subarray(cut + 1);
    }
    let value = null;
    try {
      value = JSON.parse(head);
    } catch {}
    if (!value || typeof value !== "object" || Array.isArray(value)) {
      return fail(cut < 0 ? "not a control frame" : "not a header", raw);
    }
    if (cut < 0) control(value);
    else message(value, data, raw);
  }

  function start() {
    const target = new URL(address);
    for (const [topic, stream] of streams) {
      const { e, r } = stream;
      if (r !== null) target.searchParams.append("since", `${topic}:${e}:${r}`);
    }
    const ws = (socket = new WebSocket(target, SUBPROTOCOL));
    ws.binaryType = "arraybuffer";
    heard = Date.now();
    opened = 0;
    useful = false;
    taken = acked = 0;
    ackedAt = -Infinity;
    ws.onopen = () => {
      heard = opened = Date.now();
      emit("open", { url: target.href });
    };
    ws.onmessage = receive;
    ws.onclose = (event) => end(ws, event.code, event.reason, false);
    watch();
  }

  // The dead-connection deadline: nothing received for `timeout` ms, not even a heartbeat.
  function watch() {
    if (!timeout) return;
    timer = setTimeout(() => {
      if (Date.now() - heard < timeout) return watch();
      socket.close(4000, "heartbeat timeout");
      end(socket, 4000, "heartbeat timeout", true);
    }, heard + timeout - Date.now());
  }

  function end(ws, code, reason, dead) {
    if (ws !== socket) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    socket = null;
    clearTimeout(timer);
    clearTimeout(ackTimer);
    ackTimer = 0;
    ackEvery = null;
    // A connection that proved itself resets the backoff; one refused or cut at once
    // does not, so a server that accepts and closes at once is not hammered.
    if (useful || (opened && Date.now() - opened >= maxDelay)) attempt = 0;
    const stop = closed || code === 1008;
    const delay = stop ? null : backoff(attempt++, minDelay, maxDelay);
    emit("close", { code, reason, dead, delay });
    if (!stop) {
      timer = setTimeout(() => {
        stats.reconnects++;
        start();
      }, delay);
    }
  }

  start();
  return {
    // Call listener(event) for each event of `type`; returns a function that stops it.
    on(type, listener) {
      (listeners[type] ||= []).push(listener);
      return () => {
        listeners[type] = listeners[type].filter((l) => l !== listener);
      };
    },
    // Where each stream stands, {topic: [epoch, offset]}: a later connect's `since`.
    offsets() {
      const result = {};
      for (const [topic, stream] of streams) {
        if (stream.r !== null) result[topic] = [stream.e, stream.r];
      }
      return result;
    },
    get stats() {
      return { ...stats };
    },
    get connected() {
      return socket?.readyState === 1;
    },
    // Close for good: no reconnection follows.
    close() {
      closed = true;
      clearTimeout(timer);
      if (socket) {
        const ws = socket;
        ws.close(1000);
        end(ws, 1000, "", false);
      }
    },
  };
}
