// mqtt.js in Node, for tests/test_websocket.py: connect over WebSocket, subscribe,
// wait for one message, print what happened as JSON lines, exit with a status.
//
//   node subscribe.js URL TOPIC PROTOCOL_VERSION TIMEOUT_MS
//
// Prints {"event":"subscribed",...} once the SUBACK came (the test then publishes),
// then {"event":"message","topic":...,"payload":...} and exits 0. Any error or the
// timeout prints {"event":"error","error":...} and exits 1.
"use strict";

const mqtt = require("mqtt");

const [url, topic, version, timeoutMs] = process.argv.slice(2);
if (!url || !topic) {
  console.error("usage: node subscribe.js URL TOPIC [PROTOCOL_VERSION] [TIMEOUT_MS]");
  process.exit(2);
}

function report(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

function fail(error) {
  report({ event: "error", error: String(error) });
  process.exit(1);
}

const timer = setTimeout(() => fail(`timed out after ${timeoutMs || 10000} ms`), Number(timeoutMs || 10000));

const client = mqtt.connect(url, {
  protocolVersion: Number(version || 4),
  clientId: `mqttjs-node-${process.pid}`,
  reconnectPeriod: 0,
  connectTimeout: 5000,
});

client.on("error", fail);
client.on("close", () => {
  if (!client.disconnecting) fail("connection closed");
});

client.on("connect", (connack) => {
  client.subscribe(topic, { qos: 1 }, (error, granted) => {
    if (error) return fail(error);
    report({ event: "subscribed", granted: granted.map((g) => g.qos) });
  });
});

client.on("message", (receivedTopic, payload, packet) => {
  clearTimeout(timer);
  report({
    event: "message",
    topic: receivedTopic,
    payload: payload.toString("utf8"),
    qos: packet.qos,
    protocol: client.stream.socket ? client.stream.socket.protocol : null,
  });
  client.end(false, {}, () => process.exit(0));
});
