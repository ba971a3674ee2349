// The live views: sites and their slot grids, talkgroups as dispatch channels, calls
// and busy queues, alarms, and the emergency banner over every view. Each view is an
// object with `el` (its section) and `render()`, called when the model changes; what
// an operator types lives outside the parts that are redrawn.

import { h, fill, table, unit, target, duration, time, badge } from "./dom.js";
import { query } from "./api.js";

// What a slot shows: a word for its state, then what it carries.
function slotCell(model, s) {
  let state = s.state, label;
  if (s.state === "control") label = "control";
  else if (s.state === "free") { state = "idle"; label = "idle"; }
  else if (s.state === "out_of_service") label = "out of service";
  else {
    const c = s.call !== undefined ? model.calls.get(s.call) : undefined;
    state = c ? c.type : "busy";
    label = c ? `${c.type} ${c.call}` : "busy";
  }
  return h("td", { class: `slot ${state}`, "data-state": state, "data-carrier": s.carrier, "data-slot": s.slot, "data-call": s.call, title: label }, label);
}

export function sitesView(ctx) {
  const el = h("section", { "aria-label": "Sites" });
  return {
    el,
    render() {
      const { model } = ctx;
      const tiles = [...model.links.values()].map((l) => {
        const slots = model.slots.get(l.site) ?? [];
        const carriers = [...new Set(slots.map((s) => s.carrier))];
        const perCarrier = Math.max(0, ...slots.map((s) => s.slot + 1));
        const rows = carriers.map((c) => h("tr", {},
          h("th", { scope: "row", text: `carrier ${c}` }),
          [...Array(perCarrier).keys()].map((n) => {
            const s = slots.find((x) => x.carrier === c && x.slot === n);
            return s ? slotCell(model, s) : h("td", {});
          })));
        const queued = (model.queues.get(l.site) ?? []).length;
        return h("article", { class: "tile", "data-site": l.site },
          h("h3", {}, `${l.name} (site ${l.site}) `, badge(l.connected ? "up" : "down", l.connected ? "link up" : "link down")),
          h("table", { class: "grid", "aria-label": `Slots of site ${l.site}` },
            h("thead", {}, h("tr", {}, h("td", {}), [...Array(perCarrier).keys()].map((n) => h("th", { scope: "col", text: `slot ${n}` })))),
            h("tbody", {}, rows)),
          h("p", { class: "meta", text: `${[...model.units.values()].filter((u) => u.site === l.site).length} units registered · ${queued} queued` }));
      });
      fill(el, h("h2", { text: "Sites" }), tiles.length ? h("div", { class: "tiles" }, tiles) : h("p", { class: "empty", text: "No sites provisioned." }));
    },
  };
}

export function talkgroupsView(ctx) {
  const el = h("section", { "aria-label": "Talkgroups" });
  let groups = null; // [{fleet, talkgroup, name}]
  let history = new Map(); // "fleet/talkgroup" → the last call records
  let loading = false;

  async function load() {
    loading = true;
    try {
      const fleets = (await ctx.api.get("/api/v1/fleets")).fleets;
      const all = [];
      for (const f of fleets) {
        const tgs = (await ctx.api.get(`/api/v1/fleets/${f.id}/talkgroups`)).talkgroups;
        for (const t of tgs) all.push({ fleet: f.id, talkgroup: t.id, name: t.name });
      }
      groups = all;
      history = new Map();
      await Promise.all(all.slice(0, 50).map(async (g) => {
        const page = await ctx.api.get(`/api/v1/history/calls${query({ fleet: g.fleet, talkgroup: g.talkgroup, limit: 5 })}`);
        history.set(`${g.fleet}/${g.talkgroup}`, page.calls);
      }));
    } catch (e) {
      ctx.notify(`Talkgroups: ${e.message}`);
    }
    loading = false;
    view.render();
  }

  const view = {
    el,
    shown() { load(); },
    render() {
      const { model } = ctx;
      if (!groups) {
        fill(el, h("h2", { text: "Talkgroups" }), h("p", { class: "empty", text: loading ? "Loading…" : "Not loaded." }));
        return;
      }
      const isTg = (t, g) => t && t.kind === "talkgroup" && t.fleet === g.fleet && t.talkgroup === g.talkgroup;
      const cards = groups.map((g) => {
        const call = [...model.calls.values()].find((c) => isTg(c.target, g));
        const sites = call
          ? [...new Set(call.slots.map((s) => s.site))]
          : [...new Set([...model.units.values()].filter((u) => u.unit?.fleet === g.fleet && u.talkgroups.includes(g.talkgroup)).map((u) => u.site))];
        const seen = new Set();
        const last = [...model.ended.filter((e) => isTg(e.target, g)), ...(history.get(`${g.fleet}/${g.talkgroup}`) ?? [])]
          .filter((e) => {
            const k = e.call ?? e.id;
            if (seen.has(k)) return false;
            seen.add(k);
            return true;
          })
          .slice(0, 5);
        return h("article", { class: `tile channel ${call ? "active" : ""}`, "data-talkgroup": `${g.fleet}/${g.talkgroup}` },
          h("h3", {}, `${g.name} (TG ${g.fleet}/${g.talkgroup}) `, call ? badge(call.type === "emergency" ? "emergency" : "active", call.type === "emergency" ? "emergency call" : "call up") : badge("idle")),
          h("p", {}, "Talking: ", h("strong", { text: call ? (call.talker ? ctx.label(call.talker) : "(hang time)") : "—" })),
          h("p", { text: `Sites: ${sites.length ? sites.join(", ") : "none"}` }),
          table(`Last calls of TG ${g.fleet}/${g.talkgroup}`, ["Ended", "Talker", "Sites", "Length"],
            last.map((e) => [time(e.ended_at_ms), ctx.label(e.caller), e.sites.join(", "), e.granted_at_ms ? duration(e.ended_at_ms - e.granted_at_ms) : e.cause_text ?? e.cause?.text ?? "not granted"]),
            "No calls yet."));
      });
      fill(el, h("h2", { text: "Talkgroups" }), cards.length ? h("div", { class: "tiles" }, cards) : h("p", { class: "empty", text: "No talkgroups." }));
    },
  };
  return view;
}

export function callsView(ctx) {
  const el = h("section", { "aria-label": "Calls and queues" });
  async function release(call, button) {
    button.disabled = true;
    try {
      await ctx.api.post(`/api/v1/calls/${call}/release`);
      ctx.notify(`Call ${call} released.`);
    } catch (e) {
      ctx.notify(`Release of call ${call} refused: ${e.message}`);
      button.disabled = false;
    }
  }
  return {
    el,
    ticks: true,
    render() {
      const { model, api } = ctx;
      const now = Date.now();
      const calls = [...model.calls.values()].sort((a, b) => a.call - b.call);
      const head = ["Call", "Type", "Caller", "Target", "Talking", "Sites", "Duration"];
      if (api.can("dispatcher")) head.push("Action");
      const rows = calls.map((c) => {
        const r = [String(c.call), badge(c.type), ctx.label(c.caller), target(c.target), c.talker ? ctx.label(c.talker) : "(hang time)",
          [...new Set(c.slots.map((s) => s.site))].join(", "), duration(now - c.granted_at_ms)];
        if (api.can("dispatcher")) {
          const b = h("button", { type: "button", class: "danger", "data-release": c.call, text: "Release" });
          b.addEventListener("click", () => release(c.call, b));
          r.push(b);
        }
        return r;
      });
      const queues = [...model.queues.entries()].filter(([, q]) => q.length).map(([site, q]) =>
        h("div", {}, h("h3", { text: `Site ${site}` }),
          table(`Busy queue of site ${site}`, ["Position", "Caller", "Kind", "Target", "Waiting"],
            q.map((r) => [String(r.position), ctx.label(r.caller), r.emergency || r.class === 16 ? badge("emergency") : r.call_type ?? "—", target(r.target), r.requested_at_ms ? duration(now - r.requested_at_ms) : "—"]))));
      fill(el,
        h("h2", { text: `Calls in progress (${calls.length})` }),
        table("Calls in progress", head, rows, "No calls in progress."),
        h("h2", { text: "Busy queues" }),
        queues.length ? queues : h("p", { class: "empty", text: "No one is waiting." }));
    },
  };
}

async function acknowledge(ctx, id, button) {
  button.disabled = true;
  try {
    await ctx.api.post(`/api/v1/alarms/${id}/acknowledge`);
  } catch (e) {
    ctx.notify(`Alarm ${id}: ${e.message}`);
    button.disabled = false;
  }
}

function ackButton(ctx, a, text = "Acknowledge") {
  if (!ctx.api.can("dispatcher") || a.acknowledged_at_ms) return null;
  const b = h("button", { type: "button", "data-ack": a.id, text });
  b.addEventListener("click", () => acknowledge(ctx, a.id, b));
  return b;
}

// The banner over every view: each emergency alarm until it is finished; loud (and
// heard) until a dispatcher acknowledges it, then quiet, saying who did.
export function emergencyBanner(ctx) {
  const el = document.getElementById("emergencies");
  let heard = new Set();
  return {
    render() {
      const list = ctx.model.emergencies();
      const fresh = list.filter((a) => !a.acknowledged_at_ms && !heard.has(`${a.id}:${a.occurrences}`));
      if (fresh.length) ctx.alert();
      heard = new Set(list.map((a) => `${a.id}:${a.occurrences}`));
      fill(el, list.map((a) => {
        const e = a.unit ? ctx.model.emergencyCalls.get(unit(a.unit)) : undefined;
        const open = !a.acknowledged_at_ms;
        const state = open ? (a.cleared_at_ms ? "cleared, not acknowledged" : "EMERGENCY") : `acknowledged by ${(a.acknowledged_by ?? "").replace(/^api:/, "")}${a.cleared_at_ms ? ", cleared" : ", call still up"}`;
        return h("div", { class: `emergency ${open ? "open" : "acknowledged"}`, role: open ? "alert" : "status", "data-alarm": a.id, "data-state": a.state },
          h("strong", { text: `⚠ ${state}` }),
          h("span", { text: ` Unit ${ctx.label(a.unit)}${e ? ` · ${target(e.target)} · site ${e.site}` : ""} · ${a.detail} · since ${time(a.raised_at_ms)}` }),
          ackButton(ctx, a));
      }));
    },
  };
}

export function alarmsView(ctx) {
  const el = h("section", { "aria-label": "Alarms" });
  const list = h("div");
  const past = h("div");
  async function loadPast() {
    try {
      const page = await ctx.api.get("/api/v1/alarms?finished=true&limit=50");
      fill(past, table("Alarms, newest first", ["Id", "Kind", "Subject", "State", "Raised", "Acknowledged by", "Detail"],
        page.alarms.map((a) => [String(a.id), a.kind, a.subject, badge(a.state), time(a.raised_at_ms), a.acknowledged_by ?? "—", a.detail])));
    } catch (e) {
      fill(past, h("p", { class: "error", text: e.message }));
    }
  }
  const more = h("button", { type: "button", text: "Show every alarm, finished too" });
  more.addEventListener("click", loadPast);
  el.append(h("h2", { text: "Alarms needing attention" }), list, h("h2", { text: "History" }),
    h("p", { class: "meta", text: "The controller clears an alarm itself once its condition is gone; a dispatcher acknowledges it. Cleared and acknowledged, it is finished." }),
    more, past);
  return {
    el,
    render() {
      const rows = [...ctx.model.alarms.values()].sort((a, b) => b.last_raised_at_ms - a.last_raised_at_ms)
        .map((a) => [String(a.id), a.kind === "emergency" ? badge("emergency") : a.kind, a.subject, badge(a.state), time(a.last_raised_at_ms), a.acknowledged_by ?? "—", a.detail, ackButton(ctx, a) ?? ""]);
      fill(list, table("Alarms needing attention", ["Id", "Kind", "Subject", "State", "Last raised", "Acknowledged by", "Detail", ""], rows, "No alarms."));
    },
  };
}
