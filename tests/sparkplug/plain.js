// Tahu's decoded payloads as plain JSON: Long as a decimal string, bytes as {"hex": ...}.
"use strict";
const Long = require("long");

function plain(value) {
    if (Long.isLong(value)) {
        return value.toString();
    }
    if (value instanceof Uint8Array) {
        return { hex: Buffer.from(value).toString("hex") };
    }
    if (Array.isArray(value)) {
        return value.map(plain);
    }
    if (value !== null && typeof value === "object") {
        return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
    }
    return value;
}

module.exports = { plain };
