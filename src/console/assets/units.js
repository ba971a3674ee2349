// Units: search the subscribers by IMSI, MSISDN, fleet/member or alias; each one's
// record and state on the air; and the radio commands a dispatcher sends (inhibit,
// enable, radio check, call alert), each followed from pending to its outcome.

import { h, fill, table, unit, time, badge } from "./dom.js";
import { query } from "./api.js";

const CONSOLE_UNIT = "trunkd.consoleUnit";

// The search form's one box, read as what it looks like.
export function searchQuery(text) {
  const t = text.trim();
  let m;
  if (/^\d{15}$/.test(t)) return { imsi: t };
  if ((m = /^(\d{1,5})\s*\/\s*(\d{1,5})$/.exec(t))) return { fleet: m[1], member: m[2] };
  if ((m = /^(?:fleet\s*)?(\d{1,5})$/i.exec(t))) return { fleet: m[1] };
  if (/^\+?\d{3,15}$/.test(t)) return { msisdn: t };
  return { alias: t };
}

export function unitsView(ctx) {
  const el = h("section", { "aria-label": "Units" });
  const results = h("div", { "aria-live": "polite" });
  const detail = h("div");
  let found = [];
  let chosen = null; // the subscriber shown
  const pending = new Map(); // command id → command, while it is followed

  const box = h("input", { name: "q", type: "search", "aria-label": "IMSI, MSISDN, fleet/member or alias", placeholder: "IMSI, MSISDN, fleet/member or alias" });
  const form = h("form", { class: "search", role: "search" }, box, h("button", { type: "submit", text: "Search" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const page = await ctx.api.get(`/api/v1/subscribers${query({ ...searchQuery(box.value), limit: 50 })}`);
      found = page.subscribers;
      chosen = found.length === 1 ? found[0] : null;
    } catch (e) {
      found = [];
      chosen = null;
      fill(results, h("p", { class: "error", role: "alert", text: e.field ? `${e.field}: ${e.message}` : e.message }));
      fill(detail);
      return;
    }
    view.render();
  });

  const own = h("input", { name: "console_unit", "aria-label": "This console's unit (fleet/member), for call alerts", placeholder: "fleet/member", value: localStorage.getItem(CONSOLE_UNIT) ?? "" });
  own.addEventListener("change", () => localStorage.setItem(CONSOLE_UNIT, own.value.trim()));

  async function command(kind, s) {
    let body = {};
    if (kind === "alert") {
      const m = /^(\d+)\/(\d+)$/.exec(own.value.trim());
      if (!m) {
        ctx.notify("A call alert comes from this console's unit: give it as fleet/member.");
        own.focus();
        return;
      }
      body = { from: { fleet: Number(m[1]), member: Number(m[2]) } };
    }
    try {
      const c = await ctx.api.post(`/api/v1/subscribers/${s.imsi}/${kind}`, body);
      pending.set(c.id, c);
      view.render();
      follow(c.id);
    } catch (e) {
      ctx.notify(`${kind} ${s.imsi} refused: ${e.message}`);
    }
  }

  // Reads the command again until it is no longer pending.
  async function follow(id) {
    for (;;) {
      await new Promise((r) => setTimeout(r, 500));
      let c;
      try {
        c = await ctx.api.get(`/api/v1/commands/${id}`);
      } catch (e) {
        continue;
      }
      pending.set(id, c);
      view.render();
      if (c.state !== "pending") {
        if (chosen && c.imsi === chosen.imsi) refresh();
        return;
      }
    }
  }

  async function refresh() {
    try {
      chosen = await ctx.api.get(`/api/v1/subscribers/${chosen.imsi}`);
      found = found.map((s) => (s.imsi === chosen.imsi ? chosen : s));
      view.render();
    } catch {
      // Shown as it was.
    }
  }

  el.append(h("h2", { text: "Units" }), form, results, detail,
    h("p", { class: "meta" }, h("label", {}, "This console's unit, for call alerts: ", own)));

  const view = {
    el,
    render() {
      if (found.length) {
        fill(results, table("Subscribers found", ["IMSI", "Unit", "Alias", "MSISDN", "State", "Registered at"],
          found.map((s) => {
            const air = ctx.model.units.get(s.imsi);
            const b = h("button", { type: "button", class: "link", text: s.imsi });
            b.addEventListener("click", () => { chosen = s; view.render(); });
            return [b, unit(s), s.alias ?? "—", s.msisdn ?? "—", s.inhibited ? badge("inhibited") : badge("enabled"),
              air ? `site ${air.site}` : "not registered"];
          })));
      } else if (!results.querySelector(".error")) {
        fill(results);
      }
      if (!chosen) {
        fill(detail);
        return;
      }
      const s = chosen;
      const air = ctx.model.units.get(s.imsi);
      const actions = [];
      if (ctx.api.can("dispatcher")) {
        for (const [kind, label] of [[s.inhibited ? "enable" : "inhibit", s.inhibited ? "Enable" : "Inhibit"], ["check", "Radio check"], ["alert", "Call alert"]]) {
          const b = h("button", { type: "button", "data-command": kind, text: label, class: kind === "inhibit" ? "danger" : "" });
          b.addEventListener("click", () => command(kind, s));
          actions.push(b);
        }
      }
      const cmds = [...pending.values()].filter((c) => c.imsi === s.imsi).reverse();
      const last = ctx.model.commands.get(s.imsi);
      fill(detail, h("article", { class: "tile", "data-imsi": s.imsi },
        h("h3", {}, `Unit ${unit(s)}${s.alias ? ` “${s.alias}”` : ""} `, s.inhibited ? badge("inhibited") : badge("enabled")),
        h("dl", {},
          h("dt", { text: "IMSI" }), h("dd", { text: s.imsi }),
          h("dt", { text: "MSISDN" }), h("dd", { text: s.msisdn ?? "—" }),
          h("dt", { text: "Registered" }), h("dd", { text: air ? `at site ${air.site} (TMSI ${air.tmsi})` : "no" }),
          h("dt", { text: "Affiliations" }), h("dd", { text: air && air.talkgroups.length ? air.talkgroups.map((t) => `TG ${s.fleet}/${t}`).join(", ") : "none" }),
          h("dt", { text: "Last seen" }), h("dd", { text: air ? time(air.last_activity_ms) : "—" }),
          h("dt", { text: "Permitted talkgroups" }), h("dd", { text: s.talkgroups.join(", ") || "none" }),
          h("dt", { text: "Priority" }), h("dd", { text: String(s.priority) }),
          h("dt", { text: "Last radio command" }), h("dd", { text: last ? `${last.command}: ${last.outcome}` : "—" })),
        actions.length ? h("div", { class: "actions" }, actions) : null,
        cmds.length ? table("Commands sent from this console", ["Command", "State", "Why", "Sent"],
          cmds.map((c) => [c.kind, h("span", { "data-command-state": c.state }, badge(c.state)), c.reason ?? "", time(c.created_at_ms)])) : null));
    },
  };
  return view;
}
