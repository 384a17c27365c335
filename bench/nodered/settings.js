/**
 * Node-RED settings for the benchmark's plain flow (bench/nodered/flow.json), run by
 * bench/nodered.py: no editor, no admin API, no HTTP server at all, nothing encrypted and
 * nothing phoned home. The user directory (runtime state, context) is the bench's work
 * folder, given with --userDir; broker and InfluxDB ports come from the environment
 * (${KYOSO_BENCH_*} in the flow's node properties).
 */
module.exports = {
    // Both false: Node-RED opens no HTTP port (red.js listens only if one is set).
    httpAdminRoot: false,
    httpNodeRoot: false,
    httpStatic: false,
    // The flow holds no credentials: store the (empty) credentials file unencrypted
    // instead of generating a key and asking for one.
    credentialSecret: false,
    flowFilePretty: false,
    editorTheme: { projects: { enabled: false } },
    telemetry: { enabled: false, updateNotification: false },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    functionExternalModules: false,
    // The bench reads the "Connected to broker" line (info) and the function nodes'
    // node.warn() lines; no per-message logging.
    logging: { console: { level: "info", metrics: false, audit: false } },
    mqttReconnectTime: 1000,
};
