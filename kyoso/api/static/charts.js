"use strict";
// The overview's pictures, drawn as inline SVG one unit a pixel: a state timeline of a day,
// utilization shift by shift, available capacity per capability and day. Every chart is an
// <svg role="img"> with a <title> and a <desc> saying in words what it shows, and each
// band or bar carries its own <title> and data-* attributes (what the tests read). The
// words and number formats come from `ui` (overview.js): the chosen language's catalog.
const Charts = (() => {
  const NS = document.getElementById("defs").namespaceURI;  // SVG's, from the page itself
  const STATES = ["running", "setup", "idle", "down", "planned_stop", "no_data"];
  const WITHDRAWN = ["offline", "unreadable", "insufficient_history"];
  let serial = 0;

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  const titled = (node, words) => { node.prepend(svg("title", {}, words)); return node; };

  // An <svg role="img"> of `width` x `height` labelled by its title and description.
  function frame(width, height, title, desc, kind) {
    const id = "chart-" + (++serial);
    return svg("svg", { class: "chart " + kind, viewBox: `0 0 ${width} ${height}`, width, height,
      role: "img", "aria-labelledby": id + "-t", "aria-describedby": id + "-d" },
      svg("title", { id: id + "-t" }, title), svg("desc", { id: id + "-d" }, desc));
  }

  // Round numbers for an axis from 0 up to at least `top`.
  function ticks(top) {
    const raw = Math.max(top, 1) / 4;
    const power = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
    const list = [];
    for (let v = 0; v < top + step; v += step) list.push(v);
    return list;
  }

  // Today per machine: its runs as coloured bands over its planned time, an hour axis in
  // the factory's zone and a line at now.
  function timeline(body, ui, width) {
    const start = Date.parse(body.start), end = Date.parse(body.end), asOf = Date.parse(body.as_of);
    const left = 170, right = 12, top = 26, row = 38, gap = 8, bottom = 8;
    const height = top + body.machines.length * (row + gap) + bottom;
    const x = (ms) => left + (Math.min(Math.max(ms, start), end) - start) / (end - start) * (width - left - right);
    const spoken = body.machines.map((m) => {
      const spent = new Map();
      for (const r of m.runs) spent.set(r.state, (spent.get(r.state) || 0) + (Date.parse(r.end) - Date.parse(r.start)) / 3.6e6);
      const parts = STATES.filter((s) => spent.get(s) > 0).map((s) => ui.state(s) + " " + ui.hours(spent.get(s)));
      return m.name + " (" + m.machine + "): " + (parts.join(", ") || ui.t("page.no_data"));
    });
    const chart = frame(width, height, ui.t("page.timeline"),
      ui.t("page.timeline_desc", { factory: body.factory, day: ui.date(body.day), zone: body.timezone }) +
      " " + spoken.join("; "), "timeline");
    chart.dataset.chart = body.factory;
    chart.dataset.day = body.day;
    const axis = svg("g", { class: "axis" });
    for (let ms = start, hour = 0; ms <= end; ms += 3.6e6, hour += 1) {
      axis.append(svg("line", { class: hour % 3 ? "grid" : "tick", x1: x(ms), x2: x(ms), y1: top - 4, y2: height - bottom }));
      if (hour % 3 === 0 && ms < end) {
        axis.append(svg("text", { x: x(ms), y: top - 9, "text-anchor": "middle" }, ui.clock(body.timezone, ms)));
      }
    }
    chart.append(axis);
    body.machines.forEach((m, i) => {
      const y = top + i * (row + gap);
      const g = svg("g", { "data-row": m.machine });
      const short = m.name.length > 24 ? m.name.slice(0, 23) + "…" : m.name;
      g.append(titled(svg("text", { class: "machine", x: 0, y: y + 15 }, m.machine,
        svg("tspan", { class: "label", x: 0, dy: 16 }, short)), m.name));
      for (const p of m.planned) {
        g.append(titled(svg("rect", { class: "planned", x: x(Date.parse(p.start)), y,
          width: x(Date.parse(p.end)) - x(Date.parse(p.start)), height: row }),
          ui.t("page.planned_time") + " " + ui.clock(body.timezone, Date.parse(p.start)) + "–" + ui.clock(body.timezone, Date.parse(p.end))));
      }
      for (const r of m.runs) {
        const from = Date.parse(r.start), to = Date.parse(r.end);
        g.append(titled(svg("rect", { class: "band state-" + r.state, "data-state": r.state,
          "data-start": r.start, "data-end": r.end, x: x(from), y: y + 6,
          width: Math.max(x(to) - x(from), 0.5), height: row - 12 }),
          ui.t("page.run", { machine: m.name, state: ui.state(r.state),
            start: ui.clock(body.timezone, from), end: ui.clock(body.timezone, to) })));
      }
      chart.append(g);
    });
    if (asOf >= start && asOf <= end) {
      chart.append(svg("line", { class: "now", x1: x(asOf), x2: x(asOf), y1: top - 2, y2: height - bottom + 4 }),
        svg("text", { class: "now-label", x: Math.min(x(asOf) + 4, width - right - 30), y: height - 1 }, ui.t("page.now")));
    }
    return chart;
  }

  // The legend of the timeline's states and its planned time, as HTML list items.
  function legend(ui) {
    const item = (cls, words) => {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch " + cls;
      li.append(swatch, words);
      return li;
    };
    return [...STATES.map((s) => item("state-" + s, ui.state(s))), item("planned", ui.t("page.planned_time"))];
  }

  // A shift's utilization in words: its percentage, or why it has none.
  function shiftFigure(s, ui) {
    if (s.availability !== null) return ui.percent(s.availability);
    return s.planned_s > 0 ? ui.state("no_data") : ui.t("page.no_planned_time");
  }

  // Utilization of each shift, grouped by local day, with its percentage above each bar.
  function shifts(body, ui, width) {
    const days = [...new Set(body.shifts.map((s) => s.day))].sort();
    const left = 46, right = 8, top = 22, plot = 170, under = 44;
    const height = top + plot + under;
    const most = Math.max(1, ...body.shifts.map((s) => s.availability || 0));
    const y = (r) => top + plot - r / most * plot;
    const chart = frame(width, height, ui.t("page.shifts", { days: body.days }),
      ui.t("page.shifts_desc", { factory: body.factory }) + " " + body.shifts.map((s) => ui.t("page.shift_bar",
        { day: ui.date(s.day), shift: s.shift, percent: shiftFigure(s, ui) })).join("; "),
      "shifts");
    chart.dataset.chart = body.factory;
    const axis = svg("g", { class: "axis" });
    for (const v of ticks(most * 100).filter((v) => v <= most * 100)) {
      axis.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(v / 100), y2: y(v / 100) }),
        svg("text", { x: left - 6, y: y(v / 100) + 4, "text-anchor": "end" }, ui.percent(v / 100)));
    }
    chart.append(axis);
    const slot = (width - left - right) / Math.max(days.length, 1);
    days.forEach((day, d) => {
      const group = body.shifts.filter((s) => s.day === day);
      const bar = Math.min(56, (slot - 14) / Math.max(group.length, 1));
      const first = left + d * slot + (slot - bar * group.length) / 2;
      group.forEach((s, i) => {
        const x = first + i * bar, middle = x + bar / 2;
        const words = ui.t("page.shift_bar", { day: ui.date(s.day), shift: s.shift,
          percent: shiftFigure(s, ui) });
        const g = titled(svg("g", { class: "shift" + (s.ongoing ? " ongoing" : ""), "data-day": s.day, "data-shift": s.shift,
          "data-shift-availability": s.availability ?? "" }), words);
        if (s.availability !== null) {
          g.append(svg("rect", { class: "shift-bar" + (s.availability > 1 ? " over" : ""), x: x + 2, y: y(s.availability),
            width: bar - 4, height: y(0) - y(s.availability) }),
          svg("text", { class: "value", x: middle, y: y(s.availability) - 4, "text-anchor": "middle" }, ui.percent(s.availability)));
        } else {
          g.append(svg("text", { class: "label", x: middle, y: y(0) - 4, "text-anchor": "middle" }, "—"));
        }
        g.append(svg("text", { class: "label", x: middle, y: y(0) + 15, "text-anchor": "middle" }, s.shift));
        chart.append(g);
      });
      chart.append(svg("text", { x: left + d * slot + slot / 2, y: y(0) + 34, "text-anchor": "middle" }, ui.date(day)));
    });
    return chart;
  }

  // Available machine-hours per capability and local day, one bar per capability; a
  // capability whose capacity is withdrawn gets its reason in words, never a bar.
  function phased(body, ui, width) {
    const withdrawn = new Map();
    for (const p of body.by_process) {
      const own = (body.machines || []).filter((m) => m.processes.includes(p.process));
      const why = own.map((m) => m.reasons.find((r) => WITHDRAWN.includes(r)));
      if (own.length && why.every((r) => r)) withdrawn.set(p.process, why[0]);
    }
    const shown = body.by_process.filter((p) => !withdrawn.has(p.process));
    const days = [...new Set(shown.flatMap((p) => p.buckets.map((b) => b.label)))].sort();
    const left = 54, right = 8, top = 16, plot = 180, under = 30;
    const height = top + plot + under;
    const most = Math.max(1, ...shown.flatMap((p) => p.buckets.map((b) => b.available)));
    const scale = ticks(most);
    const roof = scale[scale.length - 1];
    const y = (h) => top + plot - h / roof * plot;
    const chart = frame(width, height, ui.t("page.phased", { days: days.length }),
      ui.t("page.phased_desc", { factory: body.factory, zone: body.timezone }) + " " +
      shown.flatMap((p) => p.buckets.map((b) => ui.t(b.total === 0 ? "page.phased_none" : "page.phased_bar",
        { process: ui.process(p.process), day: ui.date(b.label), hours: ui.hours(b.available) }))).join("; "),
      "phased");
    chart.dataset.chart = body.factory;
    const axis = svg("g", { class: "axis" });
    for (const v of scale) {
      axis.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }),
        svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, ui.hours(v, 0)));
    }
    chart.append(axis);
    const slot = (width - left - right) / Math.max(days.length, 1);
    const bar = Math.min(34, (slot - 12) / Math.max(shown.length, 1));
    days.forEach((day, d) => {
      const first = left + d * slot + (slot - bar * shown.length) / 2;
      shown.forEach((p, i) => {
        const b = p.buckets.find((k) => k.label === day);
        if (!b) return;
        const x = first + i * bar;
        const words = { process: ui.process(p.process), day: ui.date(day), hours: ui.hours(b.available) };
        if (b.total === 0) {  // no planned time: nothing to offer, which a zero bar would hide
          chart.append(titled(svg("text", { class: "label", "data-capability": p.process, "data-day": day,
            x: x + bar / 2, y: y(0) - 4, "text-anchor": "middle" }, "—"),
            ui.t("page.phased_none", words)));
          return;
        }
        const g = titled(svg("g", { class: "capacity", "data-capability": p.process, "data-day": day,
          "data-hours": b.available.toFixed(2) }), ui.t("page.phased_bar", words));
        g.append(svg("rect", { class: "capacity-bar series-" + (body.by_process.indexOf(p) % 8), x: x + 1,
          y: y(b.available), width: Math.max(bar - 2, 1), height: y(0) - y(b.available) }));
        if (bar >= 20) {
          g.append(svg("text", { class: "value", x: x + bar / 2, y: y(b.available) - 3, "text-anchor": "middle" },
            ui.number(b.available)));
        }
        chart.append(g);
      });
      chart.append(svg("text", { x: left + d * slot + slot / 2, y: y(0) + 20, "text-anchor": "middle" }, ui.date(day)));
    });
    const notes = [...withdrawn].map(([process, reason]) => {
      const p = document.createElement("p");
      p.className = "withdrawn";
      p.dataset.withdrawn = process;
      p.textContent = ui.process(process) + " — " + ui.t("page.withdrawn", { reason: ui.reason(reason) });
      return p;
    });
    const key = document.createElement("ul");
    key.className = "legend";
    shown.forEach((p) => {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch series-" + (body.by_process.indexOf(p) % 8);
      li.append(swatch, ui.process(p.process));
      key.append(li);
    });
    return [shown.length ? chart : null, shown.length ? key : null, ...notes];
  }

  return { timeline, legend, shifts, phased };
})();
