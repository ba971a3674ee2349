// Building the page's DOM without HTML strings (so nothing a radio or an operator typed
// is ever parsed as markup), and the formats every view shares.

// An element: `attrs` sets attributes (`class`, `data-*`, `aria-*`, …), `text` its
// text, `on<event>` a listener; `children` are nodes, strings, arrays or nothing.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

// Replaces what `el` holds with `children`.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A table: `head` the column names, `rows` arrays of cells (nodes or text).
export function table(label, head, rows, empty = "None.") {
  if (rows.length === 0) return h("p", { class: "empty", text: empty });
  return h("table", { "aria-label": label },
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col", text: c })))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
}

// `fleet/member`.
export function unit(u) {
  return u ? `${u.fleet}/${u.member}` : "—";
}

// A call's or message's target: `TG fleet/talkgroup` or a unit.
export function target(t) {
  if (!t) return "—";
  return t.kind === "talkgroup" ? `TG ${t.fleet}/${t.talkgroup}` : unit(t);
}

// `m:ss` (or `h:mm:ss`) of `ms`.
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return hh ? `${hh}:${two(mm)}:${two(ss)}` : `${mm}:${two(ss)}`;
}

// Local date and time of Unix ms.
export function time(ms) {
  return ms ? new Date(ms).toLocaleString() : "—";
}

// A text a screen reader and a colour-blind dispatcher read alike: a badge whose
// word says the state and whose class only colours it.
export function badge(state, label = state) {
  return h("span", { class: `badge ${state}`, text: label.replaceAll("_", " ") });
}
