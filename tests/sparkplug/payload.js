// Eclipse Tahu's sparkplug-payload as a filter, for Kyoso's codec tests.
// Reads one JSON command a line on stdin, writes one JSON answer a line on stdout:
//   {"op": "encode", "payload": {...Tahu's payload object...}} -> {"hex": "..."}
//   {"op": "decode", "hex": "..."}                               -> {"payload": {...}}
// 64-bit values (Long) come out as decimal strings, bytes as {"hex": "..."}.
"use strict";
const readline = require("readline");
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const { plain } = require("./plain");

function answer(command) {
    if (command.op === "encode") {
        const payload = command.payload;
        for (const metric of payload.metrics || []) {
            if (metric.value && metric.value.hex !== undefined) {
                metric.value = Buffer.from(metric.value.hex, "hex");
            }
        }
        return { hex: Buffer.from(sparkplug.encodePayload(payload)).toString("hex") };
    }
    if (command.op === "decode") {
        return { payload: plain(sparkplug.decodePayload(Buffer.from(command.hex, "hex"))) };
    }
    throw new Error(`unknown op ${command.op}`);
}

readline.createInterface({ input: process.stdin }).on("line", (line) => {
    let out;
    try {
        out = answer(JSON.parse(line));
    } catch (err) {
        out = { error: String(err) };
    }
    process.stdout.write(JSON.stringify(out) + "\n");
});
