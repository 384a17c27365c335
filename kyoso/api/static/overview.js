"use strict";
(() => {
  const REFRESH_MS = 15000;
  const HORIZONS = [[24, "page.next_24h"], [168, "page.next_7d"]];
  const SHIFT_DAYS = 7;
  const KEY_SLOT = "kyoso.apiKey";
  const LANG_SLOT = "kyoso.lang";
  const LOCALES = { ja: "ja-JP", en: "en" };
  const $ = (id) => document.getElementById(id);
  const root = $("overview");
  const etags = new Map();   // url -> [etag, body]: sent back as If-None-Match
  let timer = null;
  const asked = new Set();   // paths requested during the current refresh
  let notModified = 0;       // answers served from `etags` (304): shown as data-not-modified
  let loaded = null;         // the last refresh's answers: drawn again in another language
  let status = () => t("page.waiting_key");  // the header's line, in the current language

  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  // Words: the catalogs of kyoso/i18n the server put in the page ({lang: {section: {name:
  // message}}}). The language is the one chosen with the switch (kept in localStorage),
  // else the browser's first that has a catalog, else English.
  const CATALOG = JSON.parse($("catalog").textContent);
  function preferred() {
    const chosen = localStorage.getItem(LANG_SLOT);
    if (chosen in CATALOG) return chosen;
    for (const tag of navigator.languages || [navigator.language]) {
      const primary = String(tag).toLowerCase().split("-")[0];
      if (primary in CATALOG) return primary;
    }
    return "en";
  }
  let lang = preferred();
  function t(key, values) {
    const dot = key.indexOf(".");
    const message = CATALOG[lang][key.slice(0, dot)][key.slice(dot + 1)];
    return values ? message.replace(/\{(\w+)\}/g, (_, name) => String(values[name])) : message;
  }
  const stateWords = (s) => CATALOG[lang].state[s] || s;
  const reasonWords = (r) => CATALOG[lang].reason[r] || r;
  const processWords = (p) => CATALOG[lang].process[p] || p.replaceAll("_", " ");

  function applyLanguage() {
    document.documentElement.lang = lang;
    root.dataset.lang = lang;
    document.title = t("page.title");
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const attr of ["placeholder", "title", "aria-label"]) {
      for (const node of document.querySelectorAll(`[data-i18n-${attr}]`)) {
        node.setAttribute(attr, t(node.getAttribute(`data-i18n-${attr}`)));
      }
    }
    for (const b of document.querySelectorAll("button[data-lang]")) b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
    $("shifts-title").textContent = t("page.shifts", { days: SHIFT_DAYS });
    $("phased-title").textContent = t("page.phased", { days: 7 });
    $("status").textContent = status();
  }

  // The key: from the fragment (never sent to the server, removed from the address bar
  // and history at once), else from this tab's sessionStorage.
  function takeKeyFromFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    const key = params.get("key");
    if (key) {
      sessionStorage.setItem(KEY_SLOT, key.trim());
      history.replaceState(null, "", location.pathname + location.search);
    }
  }
  const currentKey = () => sessionStorage.getItem(KEY_SLOT);

  // The API computes a key's KPIs, timelines and capacity two at a time (its
  // limits.max_concurrent) and refuses what waits too long: the page asks two at a time.
  const EXPENSIVE = /\/(kpis|timeline|capacity)\b/;
  let computing = 0;
  const queued = [];
  async function get(path) {
    if (!EXPENSIVE.test(path)) return ask(path);
    while (computing >= 2) await new Promise((go) => queued.push(go));
    computing += 1;
    try { return await ask(path); } finally {
      computing -= 1;
      if (queued.length) queued.shift()();
    }
  }

  // Answers that change slowly (the shifts of the last days, capacity by day) are asked
  // for again every SLOW_MS only: each refresh asks for what moves.
  const SLOW_MS = 300000;
  const slow = new Map();  // path -> [when asked, answer]
  async function seldom(path) {
    const kept = slow.get(path);
    if (kept && Date.now() - kept[0] < SLOW_MS) return kept[1];
    const answer = await allowed(path);
    slow.set(path, [Date.now(), answer]);
    return answer;
  }

  async function ask(path) {
    const headers = { Authorization: "Bearer " + currentKey(), Accept: "application/json" };
    asked.add(path);
    const known = etags.get(path);
    if (known) headers["If-None-Match"] = known[0];
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 304 && known) {
      root.dataset.notModified = String(++notModified);
      return known[1];
    }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
      throw new ApiError(response.status, String(detail));
    }
    const body = await response.json();
    const etag = response.headers.get("ETag");
    if (etag) etags.set(path, [etag, body]);
    return body;
  }

  // 403 means "not with this key": the section is left out, not an error.
  async function allowed(path) {
    try { return await get(path); } catch (e) {
      if (e instanceof ApiError && e.status === 403) return null;
      throw e;
    }
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // Numbers in the language's own format (Intl), each format built once.
  const numberFormats = new Map();
  function numbers(options) {
    const key = lang + JSON.stringify(options);
    if (!numberFormats.has(key)) numberFormats.set(key, new Intl.NumberFormat(LOCALES[lang], options));
    return numberFormats.get(key);
  }
  const missing = (v) => v === null || v === undefined;
  const percent = (r) => (missing(r) ? "—" : numbers({ style: "percent", maximumFractionDigits: 0 }).format(r));
  const hours = (h, digits = 1) => (missing(h) ? "—" : numbers({ style: "unit", unit: "hour",
    unitDisplay: "short", minimumFractionDigits: digits, maximumFractionDigits: digits }).format(h));
  function age(seconds) {
    if (missing(seconds)) return t("page.no_data");
    const [value, unit] = seconds < 90 ? [seconds, "second"] : seconds < 5400 ? [seconds / 60, "minute"]
      : seconds < 172800 ? [seconds / 3600, "hour"] : [seconds / 86400, "day"];
    return numbers({ style: "unit", unit, unitDisplay: "short", maximumFractionDigits: 0 }).format(value);
  }
  function bar(ratio, label) {
    const fill = el("span");
    fill.style.width = Math.max(0, Math.min(1, ratio || 0)) * 100 + "%";  // CSSOM: CSP-safe
    return el("div", { class: "bar", role: "img", "aria-label": label }, fill);
  }
  function badge(text, kind) { return el("span", { class: "badge " + kind }, text); }
  function fill(id, nodes) { $(id).replaceChildren(...nodes); }

  // Times and days are the factory's, in the time zone of its machines' shift calendars,
  // never the browser's: a viewer in Europe at 23:00 must not see a Tokyo shop's "today"
  // as a day that ended there hours ago.
  const BROWSER_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const formats = new Map();   // building an Intl.DateTimeFormat is slow: built once each
  function format(zone, options, locale = LOCALES[lang]) {
    const key = [zone, locale, JSON.stringify(options)].join("|");
    if (!formats.has(key)) formats.set(key, new Intl.DateTimeFormat(locale, { ...options, timeZone: zone }));
    return formats.get(key);
  }
  const DATE = { year: "numeric", month: "numeric", day: "numeric" };
  function dayOf(zone, ms) {  // the date of instant `ms` in `zone`, as the number YYYYMMDD
    const f = {};
    for (const p of format(zone, DATE, "en-US-u-ca-gregory-nu-latn").formatToParts(ms)) f[p.type] = Number(p.value);
    return f.year * 10000 + f.month * 100 + f.day;
  }
  const isoDay = (n) => String(Math.floor(n / 10000)).padStart(4, "0") + "-" +
    String(Math.floor(n / 100) % 100).padStart(2, "0") + "-" + String(n % 100).padStart(2, "0");

  // The first instant of the day `now` falls on in `zone`: its midnight, or where a
  // daylight-saving gap skips midnight, the first instant after the gap (as the shift
  // calendars read wall-clock times). Found by bisection over whole seconds.
  function startOfDay(zone, now) {
    const today = dayOf(zone, now.getTime());
    let before = Math.floor(now.getTime() / 1000) - 36 * 3600;  // on an earlier day
    let after = Math.floor(now.getTime() / 1000);               // on today
    while (after - before > 1) {
      const middle = Math.floor((before + after) / 2);
      if (dayOf(zone, middle * 1000) < today) before = middle; else after = middle;
    }
    return new Date(after * 1000);
  }

  // A factory's time zone: its machines' calendars' (the most common, should they differ).
  function zoneOf(machines) {
    const counts = new Map();
    for (const m of machines) counts.set(m.calendar.timezone, (counts.get(m.calendar.timezone) || 0) + 1);
    return [...counts].sort((a, b) => b[1] - a[1]).map(([zone]) => zone)[0] || "UTC";
  }
  const DAY = { weekday: "short", day: "numeric", month: "short" };
  const CLOCK = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  const SECONDS = { ...CLOCK, second: "2-digit" };
  const showDay = (zone, when) => format(zone, DAY).format(when);
  const showTime = (zone, when) => format(zone, { ...DAY, ...CLOCK }).format(when);
  const showClock = (zone, when) => format(zone, CLOCK).format(when);
  // A local date the API names (YYYY-MM-DD): a calendar day, the same in every zone.
  const showDate = (iso) => format("UTC", { month: "numeric", day: "numeric", weekday: "short" })
    .format(Date.parse(iso + "T00:00:00Z"));
  const ui = { t, state: stateWords, reason: reasonWords, process: processWords, percent, hours,
    number: (v) => numbers({ maximumFractionDigits: 1 }).format(v), clock: showClock, date: showDate };

  // Regional capacity; a factory key gets 403 there and sees its own factory's instead.
  async function capacity(horizon, factories) {
    const region = await allowed("/v1/capacity?horizon_h=" + horizon);
    if (region) return region;
    const own = await Promise.all(factories.map(
      (f) => get("/v1/factories/" + encodeURIComponent(f.factory) + "/capacity?horizon_h=" + horizon)));
    const sums = new Map();
    for (const f of own) {
      for (const p of f.by_process) {
        const s = sums.get(p.process) || { process: p.process, factories: 0, offline_factories: 0,
          total: 0, committed: 0, unattainable: 0, available: 0, confidence: 0 };
        s.factories += 1; s.offline_factories += f.offline ? 1 : 0;
        for (const k of ["total", "committed", "unattainable", "available"]) s[k] += p[k];
        s.confidence += p.confidence * p.total;
        sums.set(p.process, s);
      }
    }
    const by_process = [...sums.values()].map((s) => ({ ...s, confidence: s.total ? s.confidence / s.total : 0 }));
    return { horizon_h: horizon, by_process, factories: own };
  }

  async function load() {
    const factories = await get("/v1/factories");
    const base = (f) => "/v1/factories/" + encodeURIComponent(f.factory);
    const [caps, details, phased] = await Promise.all([
      Promise.all(HORIZONS.map(([h]) => capacity(h, factories))),
      Promise.all(factories.map((f) => factoryDetail(f.factory))),
      Promise.all(factories.map((f) => seldom(base(f) + "/capacity/phased?bucket=day"))),
    ]);
    return { factories, caps, details, phased, at: new Date() };
  }

  // Machines, gateways, today's KPIs and states, and the shifts' utilization of one
  // factory: null with a platform key (its gateways are 403: the platform sees shared
  // machines' public descriptions only).
  async function factoryDetail(factory) {
    const base = "/v1/factories/" + encodeURIComponent(factory);
    const gateways = await allowed(base + "/gateways");
    if (gateways === null) return null;
    const machines = await get(base + "/machines");
    const zone = zoneOf(machines);
    const now = new Date();
    const dayStart = startOfDay(zone, now);
    const window = "?start=" + encodeURIComponent(dayStart.toISOString()) +
      "&end=" + encodeURIComponent(now.toISOString());
    const [kpis, timeline, shifts] = await Promise.all([
      get(base + "/kpis" + window), allowed(base + "/timeline"),
      seldom(base + "/kpis/shifts?days=" + SHIFT_DAYS)]);
    return { machines, gateways, kpis, timeline, shifts, zone, now, dayStart };
  }

  // The pictures, as wide as their section is now (drawn again when the page is resized).
  function drawCharts({ details, phased }) {
    const width = (id) => Math.max(420, Math.floor($(id).getBoundingClientRect().width));
    const block = (factory, ...nodes) => el("div", { class: "chart-block", "data-chart-of": factory },
      el("h3", {}, factory), ...nodes);
    const timelines = details.filter((d) => d && d.timeline);
    $("timeline").hidden = !timelines.length;
    fill("timeline-charts", timelines.map((d) =>
      block(d.timeline.factory, Charts.timeline(d.timeline, ui, width("timeline-charts")))));
    fill("timeline-legend", timelines.length ? Charts.legend(ui) : []);
    const shifts = details.filter((d) => d && d.shifts);
    $("shifts").hidden = !shifts.length;
    fill("shift-charts", shifts.map((d) => block(d.shifts.factory, d.shifts.shifts.length
      ? Charts.shifts(d.shifts, ui, width("shift-charts")) : el("p", { class: "muted" }, t("page.nothing_yet")))));
    const known = phased.filter((p) => p !== null);
    $("phased").hidden = !known.length;
    fill("phased-charts", known.map((p) => p.offline
      ? block(p.factory, el("p", { class: "withdrawn", "data-withdrawn": "offline" },
          t("page.withdrawn", { reason: reasonWords("offline") })))
      : block(p.factory, ...Charts.phased(p, ui, width("phased-charts")))));
  }

  function render(answers) {
    const { factories, caps, details } = answers;
    const detailed = details.some((d) => d !== null);
    root.dataset.scope = detailed ? "detail" : "aggregate";
    $("machines-note").hidden = detailed;
    drawCharts(answers);

    fill("factory-rows", factories.map((f, i) => {
      const d = details[i];
      const k = d ? d.kpis.total : null;
      const utilization = k
        ? el("td", { "data-availability": k.kpis.availability ?? "" },
            bar(k.kpis.availability, t("page.availability", { percent: percent(k.kpis.availability) })),
            el("span", {}, t("page.apt_of_pbt", { percent: percent(k.kpis.availability),
              apt: hours(k.time.apt), pbt: hours(k.time.pbt) })))
        : el("td", { class: "muted" }, "—");
      const clock = d
        ? el("td", { "data-factory-time": f.factory, "data-zone": d.zone,
              "data-day": isoDay(dayOf(d.zone, d.now.getTime())), "data-day-start": d.dayStart.toISOString() },
            el("time", { datetime: d.now.toISOString() }, showTime(d.zone, d.now)),
            el("span", { class: "muted" }, " " + d.zone))
        : el("td", { class: "muted", title: t("page.zones_need_key") }, "—");
      return el("tr", { "data-factory": f.factory, "data-offline": f.offline },
        el("th", { scope: "row" }, f.factory),
        el("td", {}, badge(t(f.offline ? "page.offline" : "page.online"), f.offline ? "offline" : "online")),
        el("td", { class: "num" }, f.gateways_online + " / " + f.gateways_offline),
        el("td", { class: "num" }, f.machines),
        el("td", { class: "num", "data-age-s": f.data_age_s ?? "" }, age(f.data_age_s)),
        clock, utilization);
    }));

    const perFactory = new Map();
    caps.forEach((cap, i) => {
      for (const f of cap.factories) {
        const available = f.by_process.reduce((sum, p) => sum + p.available, 0);
        const row = perFactory.get(f.factory) || [];
        row[i] = { available, offline: f.offline };
        perFactory.set(f.factory, row);
      }
    });
    fill("factory-capacity-rows", [...perFactory].map(([factory, row]) =>
      el("tr", { "data-factory-capacity": factory },
        el("th", { scope: "row" }, factory),
        ...HORIZONS.map(([h], i) => row[i]
          ? el("td", { class: "num", "data-horizon": h, "data-available": row[i].available.toFixed(2) },
              hours(row[i].available), row[i].offline ? el("span", { class: "offline" }, " " + t("page.offline_mark")) : null)
          : el("td", { class: "num muted", "data-horizon": h }, "—")))));

    fill("capacity-tables", caps.map((cap, i) => {
      const [h, title] = HORIZONS[i];
      return el("table", { "data-horizon": h },
        el("caption", {}, t(title)),
        el("thead", {}, el("tr", {},
          ...["capability", "available", "", "total", "committed", "unattainable", "confidence",
              "factories"].map((k, j) => el("th", { scope: "col", class: j === 0 || j === 2 ? null : "num" },
                k ? t("page." + k) : el("span", { class: "sr-only" }, t("page.share_available")))))),
        el("tbody", {}, ...cap.by_process.map((p) =>
          el("tr", { "data-process": p.process, "data-horizon": h, "data-available": p.available.toFixed(2) },
            el("th", { scope: "row" }, processWords(p.process)),
            el("td", { class: "num" }, hours(p.available)),
            el("td", {}, bar(p.total ? p.available / p.total : 0,
              t("page.share_of_planned", { percent: percent(p.total ? p.available / p.total : 0) }))),
            el("td", { class: "num" }, hours(p.total)),
            el("td", { class: "num" }, hours(p.committed)),
            el("td", { class: "num" }, hours(p.unattainable)),
            el("td", { class: "num" }, percent(p.confidence)),
            el("td", { class: "num" }, p.factories +
              (p.offline_factories ? " (" + t("page.factories_offline", { count: p.offline_factories }) + ")" : ""))))));
    }));

    const offline = [];
    factories.forEach((f, i) => {
      const d = details[i];
      if (d) {
        for (const g of d.gateways.filter((g) => g.status !== "online")) {
          offline.push(el("li", { "data-gateway": f.factory + "/" + g.gateway },
            el("strong", {}, f.factory + " / " + g.gateway), " — ",
            t("page.gateway_since", { reason: t("page.gateway_" + g.reason),
              time: showTime(d.zone, new Date(g.since)) + " " + d.zone })));
        }
      } else if (f.gateways_offline > 0) {
        offline.push(el("li", { "data-gateway": f.factory },
          el("strong", {}, f.factory), " — " + t("page.gateways_offline_count", { count: f.gateways_offline })));
      }
    });
    fill("gateway-list", offline.length ? offline : [el("li", { class: "muted" }, t("page.all_online"))]);

    fill("machine-tables", factories.flatMap((f, i) => {
      const d = details[i];
      if (!d) return [];
      const util = new Map(d.kpis.machines.map((m) => [m.machine, m]));
      const today = el("span", { class: "muted" }, " — " + t("page.today_is", { day: showDay(d.zone, d.now), zone: d.zone }));
      return [el("h3", {}, f.factory, today), el("table", { "data-machines-of": f.factory },
        el("thead", {}, el("tr", {}, ...["machine", "name", "state", "shift", "alarm", "data_age",
          "capabilities", "utilization_today"].map((k) => el("th", { scope: "col" }, t("page." + k))))),
        el("tbody", {}, ...d.machines.map((m) => {
          const k = util.get(m.machine);
          const state = m.stale ? "stale" : (m.state || "unknown");
          const id = f.factory + "/" + m.machine;
          return el("tr", { "data-machine": id, "data-state": state },
            el("th", { scope: "row" }, m.machine),
            el("td", {}, m.name),
            el("td", {}, badge(m.stale ? t("page.stale") : stateWords(state), state)),
            m.shift
              ? el("td", { "data-shift-of": id, "data-shift": m.shift.name },
                  m.shift.name + " " + showClock(d.zone, new Date(m.shift.start)) + "–" +
                  showClock(d.zone, new Date(m.shift.end)))
              : el("td", { class: "muted", "data-shift-of": id, "data-shift": "" }, t("page.off_shift")),
            el("td", {}, m.alarm ?? "—"),
            el("td", {}, age(m.data_age_s)),
            el("td", {}, [...new Set(m.capabilities.map((c) => processWords(c.process)))].join(", ")),
            el("td", {}, k ? percent(k.kpis.availability) : "—"));
        })))];
    }));
  }

  // When the figures were loaded, at the factories' time (in each zone they are in); in
  // the browser's only where no zone is known (a platform key), and then it says so.
  function updated(details, at) {
    const zones = [...new Set(details.filter((d) => d !== null).map((d) => d.zone))];
    if (!zones.length) return t("page.browser_time", { time: format(BROWSER_ZONE, SECONDS).format(at), zone: BROWSER_ZONE });
    return zones.map((zone) => format(zone, SECONDS).format(at) + " " + zone).join(", ");
  }
  let notice = () => "";  // the notice's words, like `status`'s, said again in another language
  function say(words) { status = words; $("status").textContent = status(); }
  function warn(words) { notice = words; $("notice").textContent = notice(); }

  async function refresh() {
    clearTimeout(timer);
    if (!currentKey()) {
      root.dataset.state = "no-key";
      say(() => t("page.enter_key"));
      return;
    }
    try {
      root.dataset.state = root.dataset.state === "ready" ? "ready" : "loading";
      loaded = await load();
      render(loaded);
      const filling = loaded.caps.some((c) => c.by_process.some(
        (p) => (p.reasons || []).includes("history:backfilling")));
      warn(() => (filling ? t("page.backfilling") : ""));
      $("notice").dataset.backfilling = String(filling);
      root.dataset.state = "ready";
      root.dataset.refreshes = String(Number(root.dataset.refreshes || 0) + 1);
      // Keep the answers this refresh asked for only: the KPI addresses change with the
      // time ("end=now"), and an open page must not keep every one it ever asked.
      for (const path of [...etags.keys()]) if (!asked.has(path)) etags.delete(path);
      root.dataset.cached = String(etags.size);
      root.dataset.asked = String(asked.size);
      asked.clear();
      const { details, at } = loaded;
      say(() => t("page.updated", { time: updated(details, at), seconds: REFRESH_MS / 1000 }));
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        sessionStorage.removeItem(KEY_SLOT);
        etags.clear();
        slow.clear();
        loaded = null;
        root.dataset.state = "no-key";
        warn(() => t("page.key_refused"));
        say(() => t("page.waiting_key"));
        return;
      }
      root.dataset.state = root.dataset.state === "ready" ? "ready" : "error";
      warn(() => t("page.refresh_failed", { error: e.message }));
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    $("key-input").value = "";
    if (!key) return;
    sessionStorage.setItem(KEY_SLOT, key);
    etags.clear();
    slow.clear();
    refresh();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_SLOT);
    etags.clear();
    slow.clear();
    loaded = null;
    for (const id of ["factory-rows", "factory-capacity-rows", "capacity-tables", "gateway-list",
      "machine-tables", "timeline-charts", "timeline-legend", "shift-charts", "phased-charts"]) fill(id, []);
    for (const id of ["timeline", "shifts", "phased"]) $(id).hidden = true;
    refresh();
  });
  for (const button of document.querySelectorAll("button[data-lang]")) {
    button.addEventListener("click", () => {
      lang = button.dataset.lang;
      localStorage.setItem(LANG_SLOT, lang);
      applyLanguage();
      $("notice").textContent = notice();
      if (loaded) render(loaded);
    });
  }
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (loaded) drawCharts(loaded); }, 150);
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });

  applyLanguage();
  takeKeyFromFragment();
  refresh();
})();
