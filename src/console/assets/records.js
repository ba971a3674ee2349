// What the database keeps: call history and the audit log, with their filters and
// pages; and, for admins, the system parameters, each changed on its own with the
// API's refusal shown beside its field.

import { h, fill, table, target, duration, time, badge } from "./dom.js";
import { query } from "./api.js";

// A filter form over a paged list: `fields` [name, label, type]; `load(q, before)`
// answers {rows, next}; `head` the columns.
function pagedList(ctx, label, fields, head, load) {
  const out = h("div", { "aria-live": "polite" });
  const inputs = fields.map(([name, text, type = "text"]) => h("label", {}, `${text} `, h("input", { name, type })));
  const form = h("form", { class: "filters", "aria-label": `${label} filters` }, inputs, h("button", { type: "submit", text: "Show" }));
  let rows = [], next = null, q = {};
  async function show(before) {
    try {
      const page = await load(q, before);
      rows = before ? rows.concat(page.rows) : page.rows;
      next = page.next;
      const older = next ? h("button", { type: "button", text: "Older" }) : null;
      older?.addEventListener("click", () => show(next));
      fill(out, table(label, head, rows, "Nothing matches."), older);
    } catch (e) {
      fill(out, h("p", { class: "error", role: "alert", text: e.field ? `${e.field}: ${e.message}` : e.message }));
    }
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    q = {};
    for (const i of form.querySelectorAll("input")) {
      if (!i.value) continue;
      q[i.name] = i.type === "datetime-local" ? new Date(i.value).getTime() : i.value;
    }
    show(null);
  });
  return { el: h("div", {}, form, out), show: () => show(null) };
}

export function historyView(ctx) {
  const el = h("section", { "aria-label": "History" });
  const calls = pagedList(ctx, "Call history",
    [["from_ms", "From", "datetime-local"], ["to_ms", "To", "datetime-local"], ["fleet", "Fleet"], ["member", "Member"], ["talkgroup", "Talkgroup"], ["site", "Site"], ["type", "Type (group, private, emergency)"]],
    ["Call", "Type", "Caller", "Target", "Sites", "Requested", "Length", "Ended by"],
    async (q, before) => {
      const p = await ctx.api.get(`/api/v1/history/calls${query({ ...q, before, limit: 50 })}`);
      return {
        rows: p.calls.map((c) => [String(c.call), badge(c.type), ctx.label(c.caller), target(c.target), c.sites.join(", "), time(c.requested_at_ms),
          c.granted_at_ms ? duration(c.ended_at_ms - c.granted_at_ms) : "not granted", c.cause_text + (c.preempted ? " (preempted)" : "")]),
        next: p.next_before,
      };
    });
  const audit = pagedList(ctx, "Audit log",
    [["from_ms", "From", "datetime-local"], ["to_ms", "To", "datetime-local"], ["actor", "Actor"], ["action", "Action"], ["object", "Object"]],
    ["When", "Actor", "Action", "Object", "Detail"],
    async (q, before) => {
      const p = await ctx.api.get(`/api/v1/history/audit${query({ ...q, before, limit: 50 })}`);
      return { rows: p.entries.map((a) => [time(a.at_ms), a.actor, a.action, a.object, a.detail]), next: p.next_before };
    });
  el.append(h("h2", { text: "Call history" }), calls.el);
  // The audit log is an admin's of every fleet; the API says so to anyone else.
  if (ctx.api.can("admin")) el.append(h("h2", { text: "Audit log" }), audit.el);
  return {
    el,
    shown() {
      calls.show();
      if (ctx.api.can("admin")) audit.show();
    },
    render() {},
  };
}

export function systemView(ctx) {
  const el = h("section", { "aria-label": "System" });
  const body = h("div");
  el.append(h("h2", { text: "System parameters" }), body);

  async function save(name, input, note) {
    input.removeAttribute("aria-invalid");
    fill(note);
    try {
      const p = await ctx.api.request("PUT", `/api/v1/parameters/${encodeURIComponent(name)}`, { value: input.value });
      input.value = p.value;
      fill(note, badge("saved"));
    } catch (e) {
      input.setAttribute("aria-invalid", "true");
      fill(note, h("span", { class: "error", role: "alert", text: e.message }));
    }
  }

  const view = {
    el,
    async shown() {
      try {
        ctx.model.parameters = (await ctx.api.get("/api/v1/parameters")).parameters;
      } catch (e) {
        fill(body, h("p", { class: "error", text: e.message }));
        return;
      }
      const rows = Object.entries(ctx.model.parameters).map(([name, value]) => {
        const id = `param-${name}`;
        const input = h("input", { id, name, value, "aria-describedby": `${id}-note` });
        const note = h("span", { id: `${id}-note`, class: "note" });
        const b = h("button", { type: "submit", text: "Save" });
        const form = h("form", { class: "param", "data-parameter": name }, h("label", { for: id, text: name }), input, b, note);
        form.addEventListener("submit", (ev) => { ev.preventDefault(); save(name, input, note); });
        return form;
      });
      fill(body, rows);
    },
    render() {
      // A change another admin made shows in its field, unless this one is being edited.
      for (const [name, value] of Object.entries(ctx.model.parameters ?? {})) {
        const input = body.querySelector(`input[name="${CSS.escape(name)}"]`);
        if (input && document.activeElement !== input) input.value = value;
      }
    },
  };
  return view;
}

