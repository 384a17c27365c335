// An Eclipse Tahu edge node (sparkplug-client) for the tests of Kyoso's Sparkplug host.
// Reads one JSON command a line on stdin, writes one JSON line per answer or event on stdout:
//   {"op": "connect", "url", "group", "node", "bdSeq"?}   -> {"event": "birth"} once connected
//   {"op": "nbirth" | "ndata", "payload": {...}}          -> {"ok": "<op>"}
//   {"op": "dbirth" | "ddata" | "ddeath", "device", "payload"} -> {"ok": "<op>"}
//   {"op": "bare", "device"?, "payload"}  NDATA (DDATA with a device) without datatypes
//                                                                  -> {"ok": "bare"}
//   {"op": "seq", "seq": n}     the next message's seq (to make a gap)  -> {"ok": "seq"}
//   {"op": "raw", "topic", "payload"? | "hex"?}  published as given, QoS 0 -> {"ok": "raw"}
//   {"op": "kill"}              the socket dropped: the broker sends the NDEATH will
//                                                                  -> {"ok": "kill"}
// and {"event": "ncmd", "metrics": [...]} for each NCMD the node is sent.
// Payloads are Tahu's payload objects; a metric value {"hex": "..."} is bytes.
"use strict";
const readline = require("readline");
const sparkplugClient = require("sparkplug-client");
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const { plain } = require("./plain");
const Proto = require("sparkplug-payload/lib/sparkplugPayloadProto").org.eclipse.tahu.protobuf
    .Payload;

// Tahu's encoding with every metric's datatype left out, as the specification says data
// messages should be sent (the birth declared the datatypes).
function withoutDatatypes(bytes) {
    const message = Proto.decode(bytes);
    for (const metric of message.metrics) {
        delete metric.datatype;
    }
    return Proto.encode(message).finish();
}

let client = null;

function emit(out) {
    process.stdout.write(JSON.stringify(out) + "\n");
}

function connect(command) {
    client = sparkplugClient.newClient({
        serverUrl: command.url,
        username: "",
        password: "",
        groupId: command.group,
        edgeNode: command.node,
        clientId: `tahu-${command.node.replace(/[^A-Za-z0-9]/g, "")}-${process.pid}`,
        version: "spBv1.0",
        mqttOptions: { reconnectPeriod: 0 },
    });
    if (command.bdSeq !== undefined) {
        client.bdSeq = command.bdSeq;
    }
    client.on("birth", () => emit({ event: "birth" }));
    client.on("ncmd", (payload) => emit({ event: "ncmd", metrics: plain(payload.metrics) }));
    client.on("error", (err) => emit({ event: "error", error: String(err) }));
}

function answer(command) {
    switch (command.op) {
        case "connect":
            connect(command);
            return null;
        case "nbirth":
            client.publishNodeBirth(command.payload);
            break;
        case "ndata":
            client.publishNodeData(command.payload);
            break;
        case "dbirth":
            client.publishDeviceBirth(command.device, command.payload);
            break;
        case "ddata":
            client.publishDeviceData(command.device, command.payload);
            break;
        case "ddeath":
            client.publishDeviceDeath(command.device, command.payload);
            break;
        case "bare": {
            const encode = client.encodePayload;
            client.encodePayload = (payload) => withoutDatatypes(encode.call(client, payload));
            try {
                if (command.device !== undefined) {
                    client.publishDeviceData(command.device, command.payload);
                } else {
                    client.publishNodeData(command.payload);
                }
            } finally {
                client.encodePayload = encode;
            }
            break;
        }
        case "seq":
            client.seq = command.seq;
            break;
        case "raw": {
            const data = command.hex !== undefined
                ? Buffer.from(command.hex, "hex")
                : Buffer.from(sparkplug.encodePayload(command.payload));
            client.client.publish(command.topic, data);
            break;
        }
        case "kill":
            client.client.stream.destroy();
            break;
        default:
            throw new Error(`unknown op ${command.op}`);
    }
    return { ok: command.op };
}

readline.createInterface({ input: process.stdin }).on("line", (line) => {
    let out;
    try {
        out = answer(JSON.parse(line));
    } catch (err) {
        out = { error: String(err) };
    }
    if (out !== null) {
        emit(out);
    }
}).on("close", () => {
    if (client !== null) {
        client.client.end(true);
    }
});
