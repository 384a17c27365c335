// A Sparkplug host application for Kyoso's edge node tests, on Eclipse Tahu's
// sparkplug-payload and the mqtt client: it prints what the edge node publishes and sends
// what a host sends.
//   node edge_host.js <mqtt url> <group>
// Subscribes spBv1.0/<group>/# and spBv1.0/STATE/#; prints one JSON line per message:
//   {"event": "ready"} once subscribed
//   {"event": "message", "topic": ..., "payload": {...Tahu's decoded payload...}}
//   ("payload" is STATE's JSON on a STATE topic)
// Reads one JSON command a line on stdin:
//   {"op": "rebirth", "node": ...}  -> NCMD with Node Control/Rebirth = true
//   {"op": "state", "host": ..., "online": bool, "timestamp": n} -> retained STATE
"use strict";
const readline = require("readline");
const mqtt = require("mqtt");
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const { plain } = require("./plain");

const [url, group] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const client = mqtt.connect(url, { clientId: `edge-host-${process.pid}`, clean: true });

client.on("connect", () => {
    client.subscribe([`spBv1.0/${group}/#`, "spBv1.0/STATE/#"], { qos: 1 }, (err) => {
        say(err ? { event: "error", error: String(err) } : { event: "ready" });
    });
});
client.on("error", (err) => say({ event: "error", error: String(err) }));
client.on("message", (topic, message) => {
    const payload = topic.startsWith("spBv1.0/STATE/")
        ? JSON.parse(message.toString())
        : plain(sparkplug.decodePayload(message));
    say({ event: "message", topic, payload });
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
    const command = JSON.parse(line);
    if (command.op === "rebirth") {
        const payload = sparkplug.encodePayload({
            timestamp: Date.now(),
            metrics: [{ name: "Node Control/Rebirth", type: "Boolean", value: true }],
        });
        client.publish(`spBv1.0/${group}/NCMD/${command.node}`, Buffer.from(payload), { qos: 0 });
    } else if (command.op === "state") {
        const body = JSON.stringify({ online: command.online, timestamp: command.timestamp });
        client.publish(`spBv1.0/STATE/${command.host}`, body, { qos: 1, retain: true }, () =>
            say({ event: "sent", op: "state" })
        );
    }
}).on("close", () => client.end(true));
