// A qtasks mutator plugin in JavaScript, written from docs/PROTOCOL.md alone.
//
// It is named for task_executor_after_execute_result_replace and upper-cases
// string results with a JSON Patch; any other result gets an empty reply
// (no change). Run it beside qtasksd:
//
//   npm ci && node plugin.js --nats-url nats://127.0.0.1:4222
//
// It prints "ready" once it is registered (which creates its consumer).
//
// Credentials and TLS take the flags and environment variables of qtasksd
// and the Go plugin commands: --user/QTASKS_NATS_USER and
// --password/QTASKS_NATS_PASSWORD, or --nkey/QTASKS_NATS_NKEY (a seed file);
// --tls-ca/QTASKS_TLS_CA, --tls-cert/QTASKS_TLS_CERT and
// --tls-key/QTASKS_TLS_KEY (PEM files; the last two for mutual TLS).
"use strict";

const fs = require("fs");
const { connect, headers, nkeyAuthenticator, StringCodec } = require("nats");

function flag(name, def) {
  const i = process.argv.indexOf("--" + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const url = flag("nats-url", process.env.QTASKS_NATS_URL || "nats://127.0.0.1:4222");
const name = flag("name", "node-upper");
const version = flag("version", "1.0.0");
const trigger = "task_executor_after_execute_result_replace";
const timeoutMs = 5000;
const stream = "QTASKS_EVENTS"; // PROTOCOL.md §2
const durable = "plugin-" + name; // §9.1
const sc = StringCodec();

// Header values are percent-encoded (PROTOCOL.md §4, the CloudEvents NATS
// binding): every UTF-8 byte of a space, '"', '%' or a character outside
// printable ASCII is written %XY.
function encodeValue(s) {
  let out = "";
  for (const b of Buffer.from(String(s), "utf8")) {
    out += b <= 0x20 || b >= 0x7f || b === 0x22 || b === 0x25
      ? "%" + b.toString(16).toUpperCase().padStart(2, "0")
      : String.fromCharCode(b);
  }
  return out;
}

// decodeValue reads a header value: a value that is one quoted-string is
// unquoted, then %XY escapes are decoded once; a '%' without two hex digits
// after it stays as it is (version 1 wrote values verbatim). The result must
// be UTF-8, else it throws.
function decodeValue(s) {
  const q = /^"((?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\uffff]|\\[\t\x20-\x7e\x80-\uffff])*)"$/.exec(s);
  if (q) s = q[1].replace(/\\(.)/g, "$1");
  const raw = Buffer.from(s, "utf8");
  const bytes = [];
  const hex = (c) => /[0-9a-fA-F]/.test(String.fromCharCode(c));
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0x25 && i + 2 < raw.length && hex(raw[i + 1]) && hex(raw[i + 2])) {
      bytes.push(parseInt(String.fromCharCode(raw[i + 1], raw[i + 2]), 16));
      i += 2;
    } else {
      bytes.push(raw[i]);
    }
  }
  return new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(bytes));
}

// decide returns [contentType, body] for a patch, or null for no change.
function decide(payload) {
  if (typeof payload.result !== "string") return null;
  return [
    "application/json-patch+json",
    JSON.stringify([{ op: "replace", path: "/result", value: payload.result.toUpperCase() }]),
  ];
}

// register asks the registrar (qtasksd) to register the plugin, as §8 says:
// the registrar checks the registration, creates the plugin's consumer
// (before it stores the entry, so no invocation is missed) and answers with
// the stored entry, or with the reason it refused.
async function register(nc) {
  const reg = {
    protocol: 3, // events.ProtocolVersion; without it the registrar refuses
    name, version, triggers: [trigger], mode: "mutator",
    timeout_ms: timeoutMs, policy: "fail", registered_at: new Date().toISOString(),
    consumer: { ack_wait_ms: 2 * timeoutMs, max_deliver: 5, max_ack_pending: 64 }, // §9.1
  };
  const m = await nc.request("qtasks.registry.register." + name, sc.encode(JSON.stringify(reg)), { timeout: 35000 });
  const reply = JSON.parse(sc.decode(m.data));
  if (reply.error) throw new Error("registration refused: " + reply.error);
  return reply.plugin.order;
}

// deadLetter records that m could not be processed (PROTOCOL.md §12.3,
// data §7.4) and terminates it; its id makes a second copy (after a
// redelivery) a duplicate the stream drops. If the dead letter cannot be
// stored, the message is left to be redelivered (-NAK), not lost.
async function deadLetter(js, m, reason) {
  const id = `dead:${name}:${m.info.stream}:${m.info.streamSequence}`;
  const h = headers();
  const set = (k, v) => h.set(k, encodeValue(v));
  set("ce-specversion", "1.0");
  set("ce-type", "io.qtasks.deadletter");
  set("ce-id", id);
  set("ce-source", "qtasks/plugin/" + name);
  set("ce-plugin", name);
  set("ce-time", new Date().toISOString());
  h.set("content-type", "application/json");
  const data = {
    stream: m.info.stream, sequence: m.info.streamSequence, consumer: durable,
    subject: m.subject, deliveries: m.info.deliveryCount, reason,
  };
  try {
    await js.publish("qtasks.dead." + name, sc.encode(JSON.stringify(data)), { headers: h, msgID: id });
    console.error("dead-lettered", m.info.streamSequence + ":", reason);
    m.term();
  } catch (err) {
    console.error("recording a dead letter:", err.message);
    m.nak();
  }
}

async function answer(js, m) {
  const h = m.headers;
  const get = (k) => (h && h.get(k) ? decodeValue(h.get(k)) : "");
  const trig = get("ce-trigger");
  if (get("ce-type") !== "io.qtasks.invoke." + trig || get("ce-plugin") !== name) {
    // PROTOCOL.md §9.2 step 1: record a dead letter (§12.3), then +TERM.
    await deadLetter(js, m, "not an invocation of " + name);
    return;
  }
  const sent = Date.parse(get("ce-time"));
  const budget = parseInt(get("ce-timeoutms") || "0", 10);
  if (budget > 0 && Date.now() > sent + budget) {
    m.ack(); // stale: the executor stopped waiting (§9.2 step 2)
    return;
  }
  const invocation = get("ce-id");
  const out = headers();
  const set = (k, v) => out.set(k, encodeValue(v));
  set("ce-specversion", "1.0");
  set("ce-type", "io.qtasks.patch");
  set("ce-source", "qtasks/plugin/" + name);
  set("ce-id", invocation + ":patch");
  set("ce-time", new Date().toISOString());
  set("ce-invocation", invocation);
  set("ce-plugin", name);
  set("ce-pluginversion", version);
  for (const k of ["ce-subject", "ce-taskid", "ce-taskname", "ce-trigger", "ce-attempt", "ce-run", "ce-traceparent", "ce-replay"]) {
    const v = get(k);
    if (v) set(k, v);
  }
  let body = new Uint8Array(0);
  try {
    const patch = decide(JSON.parse(sc.decode(m.data)));
    if (patch) {
      out.set("content-type", patch[0]);
      body = sc.encode(patch[1]);
    }
  } catch (err) {
    set("ce-pluginerror", String(err.message));
  }
  try {
    // No msgID (protocol 2): a patch carrying Nats-Msg-Id is rejected.
    await js.publish(`qtasks.patch.${name}.${trig}`, body, { headers: out });
    m.ack();
  } catch (err) {
    console.error("publishing patch:", err.message);
    m.nak();
  }
}

async function main() {
  const opts = {
    servers: url,
    name: "plugin-" + name,
    // A plugin's user may subscribe only under its own inbox prefix (§14.3).
    inboxPrefix: "_INBOX_plugin_" + name,
  };
  const user = flag("user", process.env.QTASKS_NATS_USER || "");
  const nkey = flag("nkey", process.env.QTASKS_NATS_NKEY || "");
  if (nkey) {
    opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(fs.readFileSync(nkey, "utf8").trim()));
  } else if (user) {
    opts.user = user;
    opts.pass = flag("password", process.env.QTASKS_NATS_PASSWORD || "");
  }
  const tls = {
    caFile: flag("tls-ca", process.env.QTASKS_TLS_CA || ""),
    certFile: flag("tls-cert", process.env.QTASKS_TLS_CERT || ""),
    keyFile: flag("tls-key", process.env.QTASKS_TLS_KEY || ""),
  };
  if (tls.caFile || tls.certFile) {
    opts.tls = Object.fromEntries(Object.entries(tls).filter(([, v]) => v));
  }
  const nc = await connect(opts);
  const js = nc.jetstream();
  // Registering creates the consumer (§8, §9.1); then read it.
  const order = await register(nc);
  const consumer = await js.consumers.get(stream, durable);
  const messages = await consumer.consume({ max_messages: 64 });
  console.log("ready", JSON.stringify({ name, version, order }));

  const stop = async () => {
    messages.stop();
    await nc.drain();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  for await (const m of messages) {
    answer(js, m); // invocations of different tasks are answered concurrently
  }
}

// Required as a module (internal/e2e checks the header coding against
// Go's), it only exports; run, it serves.
module.exports = { encodeValue, decodeValue };
if (require.main !== module) return;

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
